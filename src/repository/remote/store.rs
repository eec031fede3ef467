//! Building an [`ObjectStore`] for a remote location, with each provider's
//! standard credential chain (all `object_store`'s own), and keeping
//! secrets out of what Sluice prints.

use crate::repository::location::RemoteUrl;
use object_store::client::ClientConfigKey;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreScheme, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// How long one request may take in all, body included. Generous, since a
/// model file can be gigabytes; a stalled body is caught per chunk instead
/// (see `IDLE_READ`).
const REQUEST_TIMEOUT: &str = "2h";

/// Retries within one listing or download. Few, and short: the poll loop
/// is the outer retry (with its own backoff), and a store that is down
/// must not hold a sync for minutes.
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(15),
        ..RetryConfig::default()
    }
}

/// The store and the prefix inside it.
///
/// - S3: `AmazonS3Builder::from_env` reads every `AWS_*` variable:
///   keys, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
///   `AWS_ALLOW_HTTP`, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` +
///   `AWS_ROLE_ARN`, which is IRSA on EKS), then instance metadata.
/// - GCS: `GOOGLE_APPLICATION_CREDENTIALS` / `GOOGLE_SERVICE_ACCOUNT*`,
///   then the metadata server (workload identity).
/// - Azure: `AZURE_STORAGE_*` (account, key, SAS, client secret,
///   `AZURE_STORAGE_USE_EMULATOR` for Azurite), workload identity
///   (`AZURE_FEDERATED_TOKEN_FILE`), then managed identity.
/// - HTTP: a WebDAV server (listing is `PROPFIND`).
pub(crate) fn build(remote: &RemoteUrl) -> Result<(Arc<dyn ObjectStore>, Path), String> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    use object_store::http::HttpBuilder;

    let fail = |e: object_store::Error| {
        format!(
            "{}: cannot set up the object store: {}",
            remote.display,
            redact(&e.to_string())
        )
    };
    let (scheme, path) = ObjectStoreScheme::parse(&remote.url)
        .map_err(|e| format!("{}: {}", remote.display, redact(&e.to_string())))?;
    let url = remote.url.as_str();
    let timeout = ClientConfigKey::Timeout;
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => Arc::new(
            AmazonS3Builder::from_env()
                .with_url(url)
                .with_config(AmazonS3ConfigKey::Client(timeout), REQUEST_TIMEOUT)
                .with_retry(retry())
                .build()
                .map_err(fail)?,
        ),
        ObjectStoreScheme::GoogleCloudStorage => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_config(GoogleConfigKey::Client(timeout), REQUEST_TIMEOUT)
                .with_retry(retry())
                .build()
                .map_err(fail)?,
        ),
        ObjectStoreScheme::MicrosoftAzure => {
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_config(AzureConfigKey::Client(timeout), REQUEST_TIMEOUT)
                .with_retry(retry());
            if let Some(account) = &remote.azure_account {
                builder = builder.with_account(account);
            }
            Arc::new(builder.build().map_err(fail)?)
        }
        ObjectStoreScheme::Http => {
            let base = &remote.url[..url::Position::BeforePath];
            // An http:// URL is the operator's explicit choice of plain HTTP.
            let plain = if remote.url.scheme() == "http" {
                "true"
            } else {
                "false"
            };
            Arc::new(
                HttpBuilder::new()
                    .with_url(base)
                    .with_config(ClientConfigKey::AllowHttp, plain)
                    .with_config(timeout, REQUEST_TIMEOUT)
                    .with_retry(retry())
                    .build()
                    .map_err(fail)?,
            )
        }
        other => {
            return Err(format!(
                "{}: {other:?} is not an object store Sluice reads models from",
                remote.display
            ));
        }
    };
    Ok((store, path))
}

/// Environment variables whose values are secrets: never printed, even
/// where an error message from a store or an HTTP client quotes them.
fn is_secret_variable(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let provider = ["AWS_", "AZURE_", "GOOGLE_", "GCS_", "GCP_"]
        .iter()
        .any(|p| name.starts_with(p));
    provider
        && ["SECRET", "TOKEN", "KEY", "SAS", "PASSWORD", "SIGNATURE"]
            .iter()
            .any(|w| name.contains(w))
}

/// `text` with every secret value from the environment, and every URL
/// query string (where SAS tokens and signatures travel), cut out.
pub(crate) fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for (name, value) in std::env::vars() {
        if value.len() >= 4 && is_secret_variable(&name) && out.contains(&value) {
            out = out.replace(&value, "[redacted]");
        }
    }
    redact_queries(&out)
}

/// Cuts the query string off every `http(s)://` URL in `text`.
fn redact_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("http") {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let end = from
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ','))
            .unwrap_or(from.len());
        let (url, after) = from.split_at(end);
        match url.split_once('?') {
            Some((base, _)) if url.contains("://") => {
                out.push_str(base);
                out.push_str("?[redacted]");
            }
            _ => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_cut_from_urls() {
        assert_eq!(
            redact_queries("GET https://a.blob.core.windows.net/c/x?sv=1&sig=abc failed, retry"),
            "GET https://a.blob.core.windows.net/c/x?[redacted] failed, retry"
        );
        assert_eq!(redact_queries("no url here"), "no url here");
        assert_eq!(
            redact_queries("(http://h/p) and http://h/q?x=1"),
            "(http://h/p) and http://h/q?[redacted]"
        );
    }

    #[test]
    fn secret_variables_are_recognised() {
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_SAS_KEY",
            "GOOGLE_SERVICE_ACCOUNT_KEY",
        ] {
            assert!(is_secret_variable(name), "{name}");
        }
        for name in ["AWS_REGION", "AWS_ENDPOINT_URL", "PATH", "HOME"] {
            assert!(!is_secret_variable(name), "{name}");
        }
    }
}
