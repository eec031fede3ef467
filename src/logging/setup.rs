//! The process's log subscriber: stderr, text for people or one JSON object
//! per line for log pipelines, colour only on a terminal, and a filter that
//! the logging API can swap while serving.

use super::{ApplyFilter, LogControl};
use std::io::IsTerminal as _;
use std::sync::Arc;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, fmt, reload};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per event, `key=value` fields.
    Text,
    /// One JSON object per line; the event's fields are top-level keys.
    Json,
}

/// When text logs carry ANSI colour codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    /// Only when stderr is a terminal.
    Auto,
    Always,
    Never,
}

/// Installs the global subscriber: log lines filtered by `filter`
/// (tracing's `EnvFilter` syntax, swappable while serving), and, with a
/// `tracer`, the spans of [`crate::telemetry::TARGET`] exported to it (a
/// filter of their own: the log level never turns traces off). Returns the
/// control the logging API uses, or why `filter` is not valid.
pub fn init(
    filter: &str,
    format: Format,
    color: Color,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> Result<LogControl, String> {
    let initial = EnvFilter::try_new(filter)
        .map_err(|e| format!("--log '{filter}' is not a valid filter: {e}"))?;
    let (log_filter, handle) = reload::Layer::new(initial);
    let traces = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target(crate::telemetry::TARGET, LevelFilter::INFO))
    });
    // Log lines never show the trace spans' own fields.
    let logs = Targets::new()
        .with_target(crate::telemetry::TARGET, LevelFilter::OFF)
        .with_default(LevelFilter::TRACE);
    let registry = tracing_subscriber::registry().with(traces);
    let ansi = match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal(),
    };
    let name = match format {
        Format::Json => {
            registry
                .with(
                    fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(false)
                        .with_span_list(false)
                        .with_writer(std::io::stderr)
                        .with_filter(log_filter)
                        .with_filter(logs),
                )
                .try_init()
                .map_err(|e| e.to_string())?;
            "json"
        }
        Format::Text => {
            registry
                .with(
                    fmt::layer()
                        .with_ansi(ansi)
                        .with_writer(std::io::stderr)
                        .with_filter(log_filter)
                        .with_filter(logs),
                )
                .try_init()
                .map_err(|e| e.to_string())?;
            "text"
        }
    };
    let apply: ApplyFilter = Arc::new(move |directives: &str| {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    Ok(LogControl::new(filter, name, Some(apply)))
}
