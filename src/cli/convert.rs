//! Flags become configuration: [`ServeArgs`] into a [`ServerConfig`] in one
//! `TryFrom` step, the flag enums into the settings they stand for, and the
//! start-up line of the settings that differ from their defaults.

use super::{ControlModeArg, LogColor, LogFormat, ServeArgs};
use crate::config::ServerConfig;
use crate::config::defaults::{self as d, nonzero_secs};
use crate::registry::ControlMode;
use std::time::Duration;

impl From<ControlModeArg> for ControlMode {
    fn from(arg: ControlModeArg) -> Self {
        match arg {
            ControlModeArg::None => ControlMode::None,
            ControlModeArg::Poll => ControlMode::Poll,
            ControlModeArg::Explicit => ControlMode::Explicit,
            ControlModeArg::OnDemand => ControlMode::OnDemand,
        }
    }
}

impl ServeArgs {
    /// The control mode and poll interval these flags mean together.
    pub(crate) fn control(&self) -> (ControlMode, Duration) {
        let mode = match self.model_control_mode {
            Some(arg) => arg.into(),
            None if self.repository_poll_secs > 0 => ControlMode::Poll,
            None => ControlMode::Explicit,
        };
        let secs = match (mode, self.repository_poll_secs) {
            (ControlMode::Poll, 0) => d::POLL_MODE_SECS,
            (ControlMode::Poll, n) => n,
            (ControlMode::OnDemand, n) => n,
            _ => 0,
        };
        (mode, Duration::from_secs(secs))
    }
}

/// The one conversion from flags to the server's configuration. The
/// logging handle is not a flag: the binary sets it after starting logging.
impl TryFrom<&ServeArgs> for ServerConfig {
    type Error = anyhow::Error;

    fn try_from(args: &ServeArgs) -> anyhow::Result<Self> {
        let secs = Duration::from_secs;
        for name in &args.load_model {
            if name != "*" && !crate::repository::valid_model_name(name) {
                anyhow::bail!(
                    "--load-model: '{name}' is not a valid model name: use letters, digits, '_', '-' and '.', without path separators or a leading '.'"
                );
            }
        }
        let model_repositories = crate::repository::location::parse_all(&args.model_repository)
            .map_err(anyhow::Error::msg)?;
        if let Some(marker) = &args.model_ready_marker {
            if marker.is_empty() || marker.contains(['/', '\\']) || marker == "." || marker == ".."
            {
                anyhow::bail!(
                    "--model-ready-marker: expected a file name such as .ready, got '{marker}'"
                );
            }
        }
        let mut model_cache = crate::repository::CacheSettings {
            max_bytes: args.model_cache_max_bytes,
            ready_marker: args.model_ready_marker.clone(),
            downloads: usize::from(args.model_downloads),
            ..Default::default()
        };
        if let Some(dir) = &args.model_cache_dir {
            model_cache.dir = dir.clone();
        }
        let (control_mode, poll_interval) = args.control();
        let on_demand = control_mode == ControlMode::OnDemand;
        if !on_demand && args.model_memory_budget_bytes > 0 {
            anyhow::bail!(
                "--model-memory-budget-bytes needs --model-control-mode on-demand (evicted models must be able to load again on request)"
            );
        }
        if !on_demand && args.model_idle_unload_secs > 0 {
            anyhow::bail!(
                "--model-idle-unload-secs needs --model-control-mode on-demand (unloaded models must be able to load again on request)"
            );
        }
        if on_demand && args.load_model.iter().any(|m| m == "*") {
            anyhow::bail!(
                "--load-model '*' cannot be used with --model-control-mode on-demand: name the models to pin"
            );
        }
        let defaults = ServerConfig::default();
        Ok(ServerConfig {
            model_repositories,
            model_cache,
            onnxruntime_lib: args.onnxruntime_lib.clone(),
            limits: crate::service::Limits {
                max_tensor_elements: args.max_tensor_elements,
                max_request_bytes: args.max_request_tensor_bytes,
                max_bytes_element: args.max_bytes_element,
            },
            http: crate::http::HttpConfig {
                max_body_bytes: args.max_body_bytes,
                max_header_bytes: args.max_header_bytes as usize,
                header_read_timeout: nonzero_secs(args.header_read_timeout_secs),
                max_concurrent_streams: args.max_concurrent_streams,
                keepalive_interval: nonzero_secs(args.http2_keepalive_secs),
            },
            body: crate::http::BodyLimits {
                read_timeout: secs(args.body_read_timeout_secs),
                max_json_depth: args.max_json_depth,
            },
            grpc_max_message_bytes: args.grpc_max_message_bytes,
            net: crate::net::NetConfig {
                max_connections: args.max_connections,
                handshake_timeout: secs(args.handshake_timeout_secs),
                idle_timeout: nonzero_secs(args.idle_timeout_secs),
            },
            max_inflight_requests: args.max_inflight_requests,
            max_inflight_body_bytes: args.max_inflight_body_bytes,
            request_timeout: nonzero_secs(args.request_timeout_secs),
            auth: crate::auth::AuthConfig {
                infer_tokens: args.auth_infer_tokens.clone(),
                admin_tokens: args.auth_admin_tokens.clone(),
                token_file: args.auth_token_file.clone(),
                protect_health: args.auth_protect_health,
                protect_metrics: args.auth_protect_metrics,
            },
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(crate::net::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: args.tls_client_ca.clone(),
                }),
                _ => None,
            },
            secrets_reload: secs(args.secrets_reload_secs),
            shutdown_delay: secs(args.shutdown_delay_secs),
            shutdown_grace: secs(args.shutdown_grace_secs),
            control_mode,
            poll_interval,
            load_models: args.load_model.clone(),
            strict_readiness: args.strict_readiness,
            exit_on_error: args.exit_on_error,
            ignore_unsupported_config: args.ignore_unsupported_config,
            strict_model_config: args.strict_model_config,
            cache_size_bytes: args.cache_size_bytes,
            inline_run_limit: std::time::Duration::from_micros(args.inline_run_limit_us),
            demand: crate::registry::DemandSettings {
                budget: (args.model_memory_budget_bytes > 0)
                    .then_some(args.model_memory_budget_bytes),
                idle_unload: nonzero_secs(args.model_idle_unload_secs),
                ..Default::default()
            },
            ..defaults
        })
    }
}

impl From<LogFormat> for crate::logging::Format {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
}

impl From<LogColor> for crate::logging::Color {
    fn from(c: LogColor) -> Self {
        match c {
            LogColor::Auto => Self::Auto,
            LogColor::Always => Self::Always,
            LogColor::Never => Self::Never,
        }
    }
}
impl ServeArgs {
    /// Where traces go (see [`crate::telemetry::init`]).
    pub fn otlp(&self) -> crate::telemetry::OtlpConfig {
        crate::telemetry::OtlpConfig {
            endpoint: self.otlp_endpoint.clone(),
            protocol: self.otlp_protocol.as_deref().map(|p| match p {
                "http/protobuf" => crate::telemetry::OtlpProtocol::HttpProtobuf,
                _ => crate::telemetry::OtlpProtocol::Grpc,
            }),
        }
    }
}

/// The settings of `sluice serve` that differ from their defaults, as one
/// readable line of `--flag=value` (from the command line or `SLUICE_*`),
/// with token values redacted; `(all defaults)` when none does.
pub fn non_default_settings(serve: &clap::ArgMatches) -> String {
    use clap::parser::ValueSource;
    let command = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
    let mut parts = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let source = serve.value_source(id);
        if !matches!(
            source,
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = arg.get_long().unwrap_or(id);
        let values: Vec<String> = serve
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let shown = if id == "model_repository" {
            // URLs may carry credentials or SAS tokens: print them as logs do.
            values
                .iter()
                .flat_map(|v| v.split(','))
                .map(|v| crate::repository::Location::parse(v).map_or_else(|e| e, |l| l.display()))
                .collect::<Vec<_>>()
                .join(",")
        } else if arg.is_hide_env_values_set() {
            format!("[redacted]x{}", values.len())
        } else if values.is_empty() {
            "true".to_string()
        } else {
            values.join(",")
        };
        parts.push(format!("--{flag}={shown}"));
    }
    if parts.is_empty() {
        "(all defaults)".into()
    } else {
        parts.join(" ")
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::try_parse_from([
            "sluice",
            "serve",
            "--model-repository",
            "m",
            "--http-port",
            "0",
            "--grpc-port",
            "9",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.model_repository, ["m"]);
        assert_eq!((args.http_port, args.grpc_port), (0, 9));
        assert_eq!(args.shutdown_grace_secs, 30);
    }

    #[test]
    fn control_mode_follows_poll_secs() {
        let parse = |args: &[&str]| {
            let mut all = vec!["sluice", "serve"];
            all.extend_from_slice(args);
            let Command::Serve(a) = Cli::try_parse_from(all).unwrap().command else {
                panic!()
            };
            a.control()
        };
        assert_eq!(parse(&[]), (ControlMode::Explicit, Duration::ZERO));
        assert_eq!(
            parse(&["--repository-poll-secs", "5"]),
            (ControlMode::Poll, Duration::from_secs(5))
        );
        assert_eq!(
            parse(&["--model-control-mode", "poll"]),
            (ControlMode::Poll, Duration::from_secs(15))
        );
        assert_eq!(
            parse(&["--model-control-mode", "none"]).0,
            ControlMode::None
        );
        let Command::Serve(a) = Cli::try_parse_from([
            "sluice",
            "serve",
            "--load-model",
            "a,b",
            "--load-model",
            "c",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!(a.load_model, vec!["a", "b", "c"]);
    }

    /// The CLI with no flags and the library's default are one configuration.
    #[test]
    fn no_flags_is_the_library_default() {
        let Command::Serve(args) = Cli::try_parse_from(["sluice", "serve"]).unwrap().command else {
            panic!()
        };
        let from_cli = ServerConfig::try_from(&*args).unwrap();
        let default = ServerConfig::default();
        assert_eq!(format!("{from_cli:?}"), format!("{default:?}"));
    }

    #[test]
    fn load_model_names_are_checked() {
        let Command::Serve(args) =
            Cli::try_parse_from(["sluice", "serve", "--load-model", "../etc"])
                .unwrap()
                .command
        else {
            panic!()
        };
        let err = ServerConfig::try_from(&*args).unwrap_err();
        assert!(err.to_string().contains("--load-model"), "{err}");
    }

    #[test]
    fn on_demand_flags() {
        let config = |args: &[&str]| {
            let mut all = vec!["sluice", "serve"];
            all.extend_from_slice(args);
            let Command::Serve(a) = Cli::try_parse_from(all).unwrap().command else {
                panic!()
            };
            ServerConfig::try_from(&*a)
        };
        let c = config(&[
            "--model-control-mode",
            "on-demand",
            "--model-memory-budget-bytes",
            "1000",
            "--model-idle-unload-secs",
            "60",
        ])
        .unwrap();
        assert_eq!(c.control_mode, ControlMode::OnDemand);
        assert_eq!(c.poll_interval, Duration::ZERO);
        assert_eq!(c.demand.budget, Some(1000));
        assert_eq!(c.demand.idle_unload, Some(Duration::from_secs(60)));
        let polling = config(&[
            "--model-control-mode",
            "on-demand",
            "--repository-poll-secs",
            "5",
        ])
        .unwrap();
        assert_eq!(polling.poll_interval, Duration::from_secs(5));
        for flag in ["--model-memory-budget-bytes", "--model-idle-unload-secs"] {
            let err = config(&[flag, "10"]).unwrap_err().to_string();
            assert!(err.contains(flag) && err.contains("on-demand"), "{err}");
        }
        let err = config(&["--model-control-mode", "on-demand", "--load-model", "*"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("name the models to pin"), "{err}");
    }

    #[test]
    fn bad_flag_values_are_rejected() {
        assert!(Cli::try_parse_from(["sluice", "serve", "--http-port", "70000"]).is_err());
        assert!(Cli::try_parse_from(["sluice", "serve", "--log-format", "xml"]).is_err());
    }
}
