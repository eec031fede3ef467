//! Log settings that change while serving: Triton's logging extension
//! (`GET/POST /v2/logging`, gRPC `LogSettings`), admin scope when auth is on.
//!
//! Triton's settings map onto one `tracing` filter: `log_verbose_level` > 0
//! turns on debug (≥ 2: trace), else the most detailed of `log_info`,
//! `log_warning`, `log_error` that is on sets the level. Sluice adds
//! `log_filter`, a full `EnvFilter` directive (`info,sluice::scheduler=debug`)
//! that wins over the Triton switches while set. `log_file` and `log_format`
//! are reported but fixed for the life of the process (logs go to stderr for
//! the container runtime; the format is `--log-format`).
//!
//! The binary owns the subscriber; it hands [`LogControl`] a function that
//! swaps the filter. Tests and embedders without one get settings that are
//! stored and reported but change nothing.

mod setup;

pub use setup::{Color, Format, init};

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One setting's value, as both protocols carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Bool(bool),
    Uint(u32),
    String(String),
}

/// Swaps the process's log filter; `Err` names what is wrong with it.
pub(crate) type ApplyFilter = Arc<dyn Fn(&str) -> std::result::Result<(), String> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    info: bool,
    warning: bool,
    error: bool,
    verbose: u32,
    format: String,
    /// An explicit filter, overriding the switches above while set.
    filter: Option<String>,
}

/// The live settings; cheap to clone.
#[derive(Clone)]
pub struct LogControl {
    settings: Arc<Mutex<Settings>>,
    apply: Option<ApplyFilter>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LogControl {
    /// Starts from the `--log` filter and `--log-format` in force.
    pub fn new(filter: &str, format: &str, apply: Option<ApplyFilter>) -> Self {
        Self {
            settings: Arc::new(Mutex::new(Settings {
                info: true,
                warning: true,
                error: true,
                verbose: 0,
                format: format.to_string(),
                filter: Some(filter.to_string()),
            })),
            apply,
        }
    }

    /// A control that reports settings and changes nothing (no subscriber).
    pub(crate) fn detached() -> Self {
        Self::new("info", "default", None)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The settings in force, Triton's names plus `log_filter`.
    pub(crate) fn get(&self) -> BTreeMap<String, Value> {
        let s = self.lock().clone();
        let filter = effective_filter(&s);
        BTreeMap::from([
            ("log_file".into(), Value::String(String::new())),
            ("log_info".into(), Value::Bool(s.info)),
            ("log_warning".into(), Value::Bool(s.warning)),
            ("log_error".into(), Value::Bool(s.error)),
            ("log_verbose_level".into(), Value::Uint(s.verbose)),
            ("log_format".into(), Value::String(s.format)),
            ("log_filter".into(), Value::String(filter)),
        ])
    }

    /// Applies `changes` all or nothing; errors name the setting, what it
    /// takes and what arrived.
    pub(crate) fn update(
        &self,
        changes: BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, Value>> {
        let mut next = self.lock().clone();
        let mut switches_changed = false;
        for (key, value) in changes {
            let want = |what: &str| {
                Error::invalid(format!(
                    "log setting '{key}' must be {what}, got {}",
                    describe(&value)
                ))
            };
            match (key.as_str(), &value) {
                ("log_info", Value::Bool(b)) => (next.info, switches_changed) = (*b, true),
                ("log_warning", Value::Bool(b)) => (next.warning, switches_changed) = (*b, true),
                ("log_error", Value::Bool(b)) => (next.error, switches_changed) = (*b, true),
                ("log_verbose_level", Value::Uint(v)) => {
                    (next.verbose, switches_changed) = (*v, true)
                }
                ("log_info" | "log_warning" | "log_error", _) => return Err(want("a boolean")),
                ("log_verbose_level", _) => return Err(want("an unsigned integer")),
                ("log_filter", Value::String(f)) => {
                    next.filter = (!f.trim().is_empty()).then(|| f.trim().to_string())
                }
                ("log_filter", _) => return Err(want("a string in tracing's EnvFilter syntax")),
                ("log_file", Value::String(f)) if f.is_empty() => {}
                ("log_file", _) => {
                    return Err(want(
                        "\"\" (logs go to stderr; a read-only container has no log file)",
                    ));
                }
                ("log_format", Value::String(f)) if *f == next.format => {}
                ("log_format", _) => {
                    return Err(want(&format!(
                        "\"{}\" (the format is fixed at start by --log-format)",
                        next.format
                    )));
                }
                (other, _) => {
                    return Err(Error::invalid(format!(
                        "unknown log setting '{other}'; expected log_info, log_warning, log_error, \
                         log_verbose_level, log_file, log_format or log_filter"
                    )));
                }
            }
        }
        // Triton's switches replace an explicit filter unless one came along.
        if switches_changed && next.filter == self.lock().filter {
            next.filter = None;
        }
        let filter = effective_filter(&next);
        if let Some(apply) = &self.apply {
            apply(&filter).map_err(|e| {
                Error::invalid(format!("log setting 'log_filter' is not valid: {e}"))
            })?;
        }
        tracing::info!(filter = %filter, "log settings changed");
        *self.lock() = next;
        Ok(self.get())
    }
}

fn effective_filter(s: &Settings) -> String {
    if let Some(f) = &s.filter {
        return f.clone();
    }
    let level = match (s.verbose, s.info, s.warning, s.error) {
        (v, ..) if v >= 2 => "trace",
        (1, ..) => "debug",
        (_, true, ..) => "info",
        (_, _, true, _) => "warn",
        (_, _, _, true) => "error",
        _ => "off",
    };
    // ONNX Runtime's own chatter stays at warnings unless asked for.
    format!("{level},ort=warn")
}

fn describe(v: &Value) -> String {
    match v {
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Uint(u) => format!("the integer {u}"),
        Value::String(s) => format!("the string {s:?}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn control() -> (LogControl, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let apply: ApplyFilter = Arc::new(move |f: &str| {
            if f.contains("bogus[") {
                return Err("bad directive".into());
            }
            log.lock().unwrap().push(f.to_string());
            Ok(())
        });
        (
            LogControl::new("info,ort=warn", "default", Some(apply)),
            seen,
        )
    }

    fn set(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn triton_switches_map_to_a_filter() {
        let (c, seen) = control();
        c.update(set(&[("log_verbose_level", Value::Uint(1))]))
            .unwrap();
        c.update(set(&[
            ("log_verbose_level", Value::Uint(0)),
            ("log_info", Value::Bool(false)),
        ]))
        .unwrap();
        let got = c
            .update(set(&[("log_filter", Value::String("sluice=trace".into()))]))
            .unwrap();
        assert_eq!(got["log_filter"], Value::String("sluice=trace".into()));
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["debug,ort=warn", "warn,ort=warn", "sluice=trace"]
        );
    }

    #[test]
    fn bad_settings_change_nothing() {
        let (c, seen) = control();
        let before = c.get();
        for (changes, needle) in [
            (
                set(&[("log_info", Value::Uint(1))]),
                "must be a boolean, got the integer 1",
            ),
            (
                set(&[("log_file", Value::String("/var/log/x".into()))]),
                "log_file",
            ),
            (
                set(&[("log_format", Value::String("ISO8601".into()))]),
                "--log-format",
            ),
            (
                set(&[("log_colour", Value::Bool(true))]),
                "unknown log setting 'log_colour'",
            ),
            (
                set(&[
                    ("log_info", Value::Bool(false)),
                    ("log_filter", Value::String("bogus[".into())),
                ]),
                "not valid",
            ),
        ] {
            let e = c.update(changes).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        assert_eq!(c.get(), before);
        assert!(seen.lock().unwrap().is_empty());
    }
}
