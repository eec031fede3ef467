//! Triton's command line: a Triton user's container `args` work unchanged
//! for the flags both servers share (same names, same meaning), and every
//! other `tritonserver` flag is refused with a message that says so and
//! names Sluice's counterpart where there is one, never with clap's generic
//! "unexpected argument".

use std::ffi::OsString;

/// `tritonserver` flags Sluice does not take, each with what to do instead.
/// The shared ones (`--model-repository`, `--http-port`, `--grpc-port`,
/// `--metrics-port`, `--model-control-mode`, `--load-model`,
/// `--strict-model-config`, `--strict-readiness`, `--exit-on-error`,
/// `--repository-poll-secs`, `--log-verbose`) are ordinary flags.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("allow-http", "Sluice always serves HTTP"),
    ("allow-grpc", "Sluice always serves gRPC"),
    (
        "allow-metrics",
        "/metrics is always on the HTTP port (and on --metrics-port if set)",
    ),
    ("allow-gpu-metrics", "GPU metrics are not exported"),
    ("allow-cpu-metrics", "CPU metrics are not exported"),
    ("allow-sagemaker", "Sluice has no SageMaker endpoint"),
    ("allow-vertex-ai", "Sluice has no Vertex AI endpoint"),
    ("sagemaker-port", "Sluice has no SageMaker endpoint"),
    ("vertex-ai-port", "Sluice has no Vertex AI endpoint"),
    ("http-address", "use --host (one address for every port)"),
    ("grpc-address", "use --host (one address for every port)"),
    ("metrics-address", "use --host (one address for every port)"),
    (
        "http-thread-count",
        "requests run on the async runtime; inference on each model's instances",
    ),
    ("reuse-http-port", "ports are not shared"),
    ("reuse-grpc-port", "ports are not shared"),
    (
        "http-header-forward-pattern",
        "headers are not forwarded as request parameters",
    ),
    (
        "grpc-header-forward-pattern",
        "headers are not forwarded as request parameters",
    ),
    (
        "http-restricted-api",
        "use bearer tokens with scopes (--auth-admin-token, --auth-infer-token)",
    ),
    (
        "grpc-restricted-protocol",
        "use bearer tokens with scopes (--auth-admin-token, --auth-infer-token)",
    ),
    (
        "grpc-use-ssl",
        "use --tls-cert and --tls-key (TLS on both ports)",
    ),
    ("grpc-use-ssl-mutual", "use --tls-client-ca"),
    ("grpc-server-cert", "use --tls-cert"),
    ("grpc-server-key", "use --tls-key"),
    ("grpc-root-cert", "use --tls-client-ca"),
    ("grpc-keepalive-time", "use --http2-keepalive-secs"),
    ("grpc-keepalive-timeout", "use --http2-keepalive-secs"),
    (
        "grpc-keepalive-permit-without-calls",
        "use --http2-keepalive-secs",
    ),
    (
        "grpc-http2-max-pings-without-data",
        "use --http2-keepalive-secs",
    ),
    (
        "grpc-http2-min-recv-ping-interval-without-data",
        "use --http2-keepalive-secs",
    ),
    ("grpc-http2-max-ping-strikes", "use --http2-keepalive-secs"),
    ("grpc-max-connection-age", "use --idle-timeout-secs"),
    ("grpc-max-connection-age-grace", "use --shutdown-grace-secs"),
    (
        "grpc-infer-allocation-pool-size",
        "Sluice keeps no response pool",
    ),
    (
        "grpc-infer-response-compression-level",
        "responses are not compressed",
    ),
    ("exit-timeout-secs", "use --shutdown-grace-secs"),
    (
        "disable-auto-complete-config",
        "use --strict-model-config=true",
    ),
    (
        "model-config-name",
        "the configuration is config.pbtxt or config.toml",
    ),
    ("model-namespacing", "model names are unique in a server"),
    ("model-load-thread-count", "models load one at a time"),
    (
        "model-load-retry-count",
        "a failed load is retried by the next poll or load call",
    ),
    ("backend-directory", "Sluice runs ONNX Runtime itself"),
    (
        "backend-config",
        "per-model settings go in config.pbtxt or config.toml",
    ),
    ("repoagent-directory", "Sluice has no repository agents"),
    (
        "pinned-memory-pool-byte-size",
        "ONNX Runtime copies tensors itself",
    ),
    (
        "cuda-memory-pool-byte-size",
        "use the CUDA provider's memory_limit_bytes in config.toml",
    ),
    (
        "cuda-virtual-address-size",
        "ONNX Runtime manages CUDA memory itself",
    ),
    (
        "min-supported-compute-capability",
        "ONNX Runtime checks the GPU itself",
    ),
    (
        "buffer-manager-thread-count",
        "Sluice has no buffer manager",
    ),
    ("host-policy", "Sluice has no host policies"),
    (
        "rate-limit",
        "Sluice has no rate limiter; queues are bounded per model",
    ),
    (
        "rate-limit-resource",
        "Sluice has no rate limiter; queues are bounded per model",
    ),
    ("response-cache-byte-size", "use --cache-size-bytes"),
    (
        "cache-config",
        "use --cache-size-bytes (the local cache only)",
    ),
    (
        "cache-directory",
        "use --cache-size-bytes (the local cache only)",
    ),
    ("log-info", "use --log (e.g. --log info)"),
    ("log-warning", "use --log (e.g. --log warn)"),
    ("log-error", "use --log (e.g. --log error)"),
    ("log-file", "logs go to stderr"),
    ("id", "the server's name is sluice"),
    ("metrics-interval-ms", "metrics are computed when scraped"),
    ("metrics-config", "metric families and buckets are fixed"),
    ("trace-config", "use --otlp-endpoint (OpenTelemetry)"),
    ("trace-file", "use --otlp-endpoint (OpenTelemetry)"),
    ("trace-level", "use --otlp-endpoint (OpenTelemetry)"),
    ("trace-rate", "use OTEL_TRACES_SAMPLER_ARG"),
    ("trace-count", "use OTEL_TRACES_SAMPLER_ARG"),
    ("trace-log-frequency", "use --otlp-endpoint (OpenTelemetry)"),
    ("memory-fraction", "ONNX Runtime manages memory itself"),
];

/// The arguments with `serve` put first when they start with a flag, so
/// that `sluice --model-repository=/models`, which is how a Triton
/// container's `args` read, serves.
pub fn with_default_command(args: Vec<OsString>) -> Vec<OsString> {
    let starts_with_flag = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with("--") && !matches!(a, "--help" | "--version"));
    if !starts_with_flag {
        return args;
    }
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut rest = args.into_iter();
    out.extend(rest.next());
    out.push("serve".into());
    out.extend(rest);
    out
}

/// A clear error for the first `tritonserver` flag Sluice does not take.
pub fn unsupported_triton_flag(args: &[OsString]) -> Option<String> {
    args.iter().filter_map(|a| a.to_str()).find_map(|arg| {
        let name = arg.strip_prefix("--")?.split('=').next()?;
        let (_, instead) = UNSUPPORTED.iter().find(|(flag, _)| *flag == name)?;
        Some(format!(
            "--{name} is a Triton Inference Server flag that Sluice does not support: {instead}. Sluice takes Triton's --model-repository, --http-port, --grpc-port, --metrics-port, --model-control-mode, --load-model, --strict-model-config, --strict-readiness, --exit-on-error, --repository-poll-secs and --log-verbose; see `sluice serve --help`"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_leading_flag_means_serve() {
        assert_eq!(
            with_default_command(args(&["sluice", "--model-repository=/m"])),
            args(&["sluice", "serve", "--model-repository=/m"])
        );
        for unchanged in [
            &["sluice", "serve", "--http-port", "1"][..],
            &["sluice", "--help"],
            &["sluice", "healthcheck"],
            &["sluice"],
        ] {
            assert_eq!(with_default_command(args(unchanged)), args(unchanged));
        }
    }

    #[test]
    fn triton_only_flags_are_named_with_what_to_use() {
        let e = unsupported_triton_flag(&args(&["sluice", "serve", "--allow-http=true"]))
            .expect("refused");
        assert!(
            e.starts_with("--allow-http is a Triton Inference Server flag"),
            "{e}"
        );
        let e =
            unsupported_triton_flag(&args(&["s", "--exit-timeout-secs", "5"])).expect("refused");
        assert!(e.contains("use --shutdown-grace-secs"), "{e}");
        assert_eq!(
            unsupported_triton_flag(&args(&[
                "s",
                "serve",
                "--model-repository=/m",
                "--log-verbose=1"
            ])),
            None
        );
    }

    #[test]
    fn no_refused_flag_is_a_sluice_flag() {
        use clap::CommandFactory as _;
        let cli = crate::cli::Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        for (flag, _) in UNSUPPORTED {
            assert!(
                serve.get_arguments().all(|a| a.get_long() != Some(flag)),
                "--{flag} is both refused and a Sluice flag"
            );
        }
    }
}
