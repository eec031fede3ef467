//! The process's log subscriber: stderr, text for people or one JSON object
//! per line for log pipelines, colour only on a terminal, and a filter that
//! the logging API can swap while serving.

use super::{ApplyFilter, LogControl};
use std::io::IsTerminal as _;
use std::sync::Arc;
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
use tracing_subscriber::layer::{Layered, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry, fmt, reload};

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
    let (subscriber, control) = build(filter, format, color, tracer)?;
    subscriber.try_init().map_err(|e| e.to_string())?;
    Ok(control)
}

type Layers = Vec<Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>>;

/// The subscriber [`init`] installs, and its control.
fn build(
    filter: &str,
    format: Format,
    color: Color,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> Result<(Layered<Layers, Registry>, LogControl), String> {
    let initial = EnvFilter::try_new(filter)
        .map_err(|e| format!("--log '{filter}' is not a valid filter: {e}"))?;
    let (log_filter, handle) = reload::Layer::new(initial);
    // Layers in a list, each with one filter of its own. The registry
    // builds a span when any layer's filter enables it. The log layer's two
    // filters (the level, and "no trace spans") are therefore one combined
    // filter: stacked as two `with_filter` calls, the outer one (TRACE for
    // everything but trace spans) alone decided, so every span of every
    // library (h2 opens several per frame at TRACE) was built in the
    // registry and closed again with nothing recording it: ~20% of the
    // server's CPU under gRPC load (docs/benchmarks.md).
    let mut layers: Layers = Vec::new();
    if let Some(tracer) = tracer {
        layers.push(Box::new(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(
                    Targets::new().with_target(crate::telemetry::TARGET, LevelFilter::INFO),
                ),
        ));
    }
    // Log lines never show the trace spans' own fields.
    let logs = Targets::new()
        .with_target(crate::telemetry::TARGET, LevelFilter::OFF)
        .with_default(LevelFilter::TRACE);
    let ansi = match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal(),
    };
    let name = match format {
        Format::Json => {
            layers.push(Box::new(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_filter(log_filter.and(logs)),
            ));
            "json"
        }
        Format::Text => {
            layers.push(Box::new(
                fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr)
                    .with_filter(log_filter.and(logs)),
            ));
            "text"
        }
    };
    let subscriber = tracing_subscriber::registry().with(layers);
    let apply: ApplyFilter = Arc::new(move |directives: &str| {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    Ok((subscriber, LogControl::new(filter, name, Some(apply))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spans below the log level are never built, whichever crate opens
    /// them, in either format; raising the level while serving builds them.
    #[test]
    fn spans_below_the_log_level_are_not_built() {
        for format in [Format::Text, Format::Json] {
            let (subscriber, control) = build("warn", format, Color::Never, None).unwrap();
            tracing::subscriber::with_default(subscriber, || {
                assert!(tracing::trace_span!(target: "h2", "pop_frame").is_disabled());
                assert!(tracing::debug_span!("request").is_disabled());
                assert!(!tracing::warn_span!("slow").is_disabled());
                // Trace spans are for the exporter, never for log lines.
                let traced = tracing::info_span!(target: crate::telemetry::TARGET, "infer");
                assert!(traced.is_disabled(), "{format:?}");
                control
                    .update(std::collections::BTreeMap::from([(
                        "log_filter".to_string(),
                        super::super::Value::String("debug".into()),
                    )]))
                    .unwrap();
                assert!(!tracing::debug_span!("request").is_disabled());
                assert!(tracing::trace_span!(target: "h2", "pop_frame").is_disabled());
            });
        }
    }
}
