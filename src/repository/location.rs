//! Where a model repository is: a local directory, or a prefix in an object
//! store (`s3://`, `gs://`, `az://`/`azure://`, Triton's `as://`, or an
//! `http(s)://` server that lists directories over WebDAV).
//!
//! A location is parsed once, at start, so a malformed URL or an unknown
//! scheme stops the server with a message that names the flag. Its
//! [`Location::display`] form is what logs, errors, the index and the
//! metrics' `repository` label show: user info and query strings (SAS
//! tokens) are cut off, so no secret given in a URL is ever printed.

use std::path::PathBuf;

/// One `--model-repository` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote(RemoteUrl),
}

/// An object-store location, as a URL `object_store` understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    /// The URL handed to the store's builder (Triton's `as://` rewritten).
    pub(crate) url: url::Url,
    /// The printable form: scheme, host and path only.
    pub(crate) display: String,
    /// The storage account of Triton's `as://<account>/...` form.
    pub(crate) azure_account: Option<String>,
}

impl Location {
    /// Parses one value. A value without `scheme://` (or with `file://`) is
    /// a local path.
    pub fn parse(value: &str) -> Result<Location, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err(
                "--model-repository: expected a directory or a URL, got an empty value".into(),
            );
        }
        let Some((scheme, _)) = value.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(value)));
        };
        let parsed = url::Url::parse(value).map_err(|e| {
            format!(
                "--model-repository: '{}' is not a valid URL: {e}",
                printable(value)
            )
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "file" => parsed.to_file_path().map(Location::Local).map_err(|()| {
                format!(
                    "--model-repository: '{}' is not a local path",
                    printable(value)
                )
            }),
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => {
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(format!(
                        "--model-repository: '{}' names no bucket or container; expected {scheme}://<bucket>/<prefix>",
                        printable(value)
                    ));
                }
                Ok(Location::Remote(RemoteUrl::new(parsed)))
            }
            "as" => triton_azure(&parsed).map(Location::Remote),
            "http" | "https" => {
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(format!(
                        "--model-repository: '{}' names no host",
                        printable(value)
                    ));
                }
                Ok(Location::Remote(RemoteUrl::new(parsed)))
            }
            other => Err(format!(
                "--model-repository: unknown scheme '{other}://' in '{}'; expected a directory, file://, s3://, gs://, az:// (or azure://, as://), http:// or https://",
                printable(value)
            )),
        }
    }

    /// The printable form.
    pub fn display(&self) -> String {
        match self {
            Location::Local(path) => path.display().to_string(),
            Location::Remote(remote) => remote.display.clone(),
        }
    }
}

impl RemoteUrl {
    fn new(url: url::Url) -> Self {
        let display = printable(url.as_str());
        Self {
            url,
            display,
            azure_account: None,
        }
    }
}

/// Triton's Azure form, `as://<account>/<container>/<prefix>`, as
/// `object_store` spells it: `az://<container>/<prefix>`, with the account
/// kept beside it for the store's builder.
fn triton_azure(url: &url::Url) -> Result<RemoteUrl, String> {
    let account = url.host_str().unwrap_or_default();
    let path = url.path().trim_start_matches('/');
    let (container, prefix) = path.split_once('/').unwrap_or((path, ""));
    if account.is_empty() || container.is_empty() {
        return Err(format!(
            "--model-repository: '{}' must be as://<account>/<container>/<prefix>",
            printable(url.as_str())
        ));
    }
    let rewritten = url::Url::parse(&format!("az://{container}/{prefix}"))
        .map_err(|e| format!("--model-repository: '{}': {e}", printable(url.as_str())))?;
    let mut remote = RemoteUrl::new(rewritten);
    remote.display = printable(url.as_str());
    remote.azure_account = Some(account.to_string());
    Ok(remote)
}

/// `value` without user info and without a query or fragment.
fn printable(value: &str) -> String {
    let Ok(mut url) = url::Url::parse(value) else {
        // Not a URL: cut at the first '?' or '#' and drop anything before '@'.
        let cut = value.split(['?', '#']).next().unwrap_or_default();
        return match cut.split_once("://") {
            Some((scheme, rest)) => {
                let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                format!("{scheme}://{rest}")
            }
            None => cut.to_string(),
        };
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// Splits the flag's values: it may repeat, and each value may list several
/// repositories separated by commas.
pub fn parse_all(values: &[String]) -> Result<Vec<Location>, String> {
    let mut locations = Vec::new();
    for value in values {
        for part in value.split(',').filter(|p| !p.trim().is_empty()) {
            let location = Location::parse(part)?;
            if locations.contains(&location) {
                return Err(format!(
                    "--model-repository: '{}' is given twice",
                    location.display()
                ));
            }
            locations.push(location);
        }
    }
    if locations.is_empty() {
        return Err("--model-repository: expected at least one directory or URL".into());
    }
    Ok(locations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(value: &str) -> RemoteUrl {
        match Location::parse(value) {
            Ok(Location::Remote(r)) => r,
            other => panic!("{value}: {other:?}"),
        }
    }

    #[test]
    fn plain_paths_and_file_urls_are_local() {
        assert_eq!(
            Location::parse("models").unwrap(),
            Location::Local("models".into())
        );
        assert_eq!(
            Location::parse("file:///srv/models").unwrap(),
            Location::Local("/srv/models".into())
        );
    }

    #[test]
    fn object_store_schemes_are_remote() {
        for url in [
            "s3://bucket/models",
            "gs://bucket/a/b",
            "az://container/models",
            "azure://container",
            "http://127.0.0.1:8080/models",
            "https://example.com/repo",
        ] {
            assert_eq!(remote(url).display, url, "{url}");
        }
    }

    #[test]
    fn tritons_azure_form_is_rewritten_and_keeps_its_name() {
        let r = remote("as://account/container/some/prefix");
        assert_eq!(r.url.scheme(), "az");
        assert_eq!(r.url.host_str(), Some("container"));
        assert_eq!(r.url.path(), "/some/prefix");
        assert_eq!(r.azure_account.as_deref(), Some("account"));
        assert_eq!(r.display, "as://account/container/some/prefix");
        assert!(Location::parse("as://account").is_err());
    }

    #[test]
    fn secrets_in_urls_are_never_printed() {
        let r = remote("https://user:hunter2@example.com/models?sig=SECRET&se=x");
        assert_eq!(r.display, "https://example.com/models");
        let e = Location::parse("ftp://user:hunter2@host/x?sig=SECRET").unwrap_err();
        assert!(!e.contains("hunter2") && !e.contains("SECRET"), "{e}");
        assert!(e.contains("unknown scheme 'ftp://'"), "{e}");
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        let e = Location::parse("s3:///no-bucket").unwrap_err();
        assert!(e.contains("names no bucket"), "{e}");
        let e = Location::parse("s3://bu cket/x").unwrap_err();
        assert!(e.contains("not a valid URL"), "{e}");
        assert!(Location::parse("  ").is_err());
    }

    #[test]
    fn values_repeat_and_split_on_commas() {
        let all = parse_all(&["a,s3://b/p".into(), "c".into()]).unwrap();
        assert_eq!(all.len(), 3);
        assert!(parse_all(&["a,a".into()]).unwrap_err().contains("twice"));
        assert!(parse_all(&[",".into()]).is_err());
    }
}
