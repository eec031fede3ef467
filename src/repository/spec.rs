//! The parts of Sluice's [`ModelConfig`](super::ModelConfig) that only a
//! Triton `config.pbtxt` can say today: declared tensors, queue policies,
//! warmup samples, ensembles, and the fields Sluice does not support.
//!
//! These are Sluice's own terms: neither front end's syntax leaks past
//! `repository/`. The registry checks declared tensors against the graph at
//! load (`registry::signature`).

use crate::tensor::DataType;
use bytes::Bytes;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Which front end a model's configuration came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ConfigSource {
    /// Neither file: everything derived from the ONNX graph.
    #[default]
    Graph,
    /// `config.toml`.
    Toml,
    /// Triton's `config.pbtxt`.
    Pbtxt,
}

/// A tensor the configuration declares (Triton's `input` / `output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorDecl {
    pub(crate) name: String,
    pub(crate) datatype: DataType,
    /// The shape clients send or receive, without the batch dimension when
    /// the model batches; -1 is any size.
    pub(crate) dims: Vec<i64>,
    /// The shape the model sees, when it differs from `dims` (Triton's
    /// `reshape`, same element count; without the batch dimension).
    pub(crate) reshape: Option<Vec<i64>>,
    /// Class labels of an output, one per line of its label file.
    pub(crate) labels: Option<Labels>,
    /// An input requests may leave out (Triton's `optional`); the graph's
    /// default value is then used.
    pub(crate) optional: bool,
}

impl TensorDecl {
    /// The shape the graph sees, without the batch dimension.
    pub(crate) fn model_dims(&self) -> &[i64] {
        self.reshape.as_deref().unwrap_or(&self.dims)
    }
}

/// An output's label file, read when the configuration is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Labels {
    /// As written in the configuration, relative to the model directory.
    pub(crate) file: String,
    pub(crate) labels: Arc<Vec<String>>,
}

/// The largest label file read.
const MAX_LABEL_FILE: u64 = 64 << 20;

impl Labels {
    /// Reads a label file: one label per line, in class order. `field`
    /// names the setting in messages (`output 'x'`, `outputs.x`).
    pub(crate) fn read(file: &str, files: &ModelFiles, field: &str) -> Result<Labels, String> {
        let at = |e: String| format!("`{field}.label_filename` {e}");
        let path = files.resolve("", file).map_err(at)?;
        let size = std::fs::metadata(&path)
            .map_err(|e| at(format!("cannot be read: {e}")))?
            .len();
        if size > MAX_LABEL_FILE {
            return Err(at(format!(
                "is {size} bytes, over the limit of {MAX_LABEL_FILE}"
            )));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| at(format!("cannot be read as UTF-8 text: {e}")))?;
        let labels = text
            .lines()
            .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
            .collect();
        Ok(Labels {
            file: file.to_string(),
            labels: Arc::new(labels),
        })
    }
}

/// What happens to a request whose queue timeout passes before it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TimeoutAction {
    /// Answer it with a timeout; it never runs.
    #[default]
    Reject,
    /// Run it after every request of its own and higher levels that has not
    /// timed out (it may wait indefinitely under load).
    Delay,
}

/// The queue policy of one priority level (Triton's `ModelQueuePolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueuePolicy {
    /// Requests this level may hold; 0: only the version's `max_queue_size`.
    pub(crate) max_queue_size: usize,
    /// Queue timeout (µs) of a request that sets none; 0: none.
    pub(crate) default_timeout_us: u64,
    /// Whether a request may set a shorter timeout than the default.
    pub(crate) allow_timeout_override: bool,
    pub(crate) timeout_action: TimeoutAction,
}

/// One warmup input of a Triton `model_warmup` sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WarmupInput {
    pub(crate) datatype: DataType,
    /// Without the batch dimension.
    pub(crate) dims: Vec<usize>,
    pub(crate) data: WarmupData,
}

/// Where a warmup input's values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WarmupData {
    Zero,
    Random,
    /// The content of a file under `<model>/warmup/`, read at configuration
    /// time: one sample, row-major (BYTES: 4-byte little-endian length, then
    /// the bytes, per element). It is repeated for every row of the batch.
    File {
        name: String,
        bytes: Bytes,
    },
}

/// An ensemble: a pipeline of models run inside the server (from
/// `ensemble_scheduling`; served by `registry::ensemble`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ensemble {
    pub(crate) steps: Vec<EnsembleStep>,
}

/// One model of an ensemble's pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnsembleStep {
    pub(crate) model_name: String,
    /// None: the latest version served.
    pub(crate) model_version: Option<u64>,
    /// Step input name -> ensemble tensor name.
    pub(crate) input_map: BTreeMap<String, String>,
    /// Step output name -> ensemble tensor name.
    pub(crate) output_map: BTreeMap<String, String>,
}

/// A configuration field Sluice does not support. By default the model is
/// UNAVAILABLE with this as its reason; with `ignore_unsupported_config` the
/// field is logged as a warning and the model loads without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsupported {
    /// The field's path in the configuration, e.g. `sequence_batching`.
    pub(crate) field: String,
    /// Why Sluice cannot honour it.
    pub(crate) why: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` is not supported: {}", self.field, self.why)
    }
}

/// Paths a configuration may name, resolved inside the model directory.
#[derive(Debug, Clone)]
pub(crate) struct ModelFiles {
    pub(crate) dir: PathBuf,
}

impl ModelFiles {
    /// Resolves `relative` under `sub` (a folder of the model directory),
    /// refusing anything that could leave it: absolute paths, `..`, and
    /// links that point outside.
    pub(crate) fn resolve(&self, sub: &str, relative: &str) -> Result<PathBuf, String> {
        use std::path::Component;
        let path = std::path::Path::new(relative);
        if relative.is_empty()
            || !path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!(
                "must be a relative path inside the model directory's {}, without '..'. Given: {relative:?}",
                if sub.is_empty() {
                    "folder".to_string()
                } else {
                    format!("'{sub}' folder")
                }
            ));
        }
        let base = self.dir.join(sub);
        let joined = base.join(path);
        let (Ok(base), Ok(real)) = (base.canonicalize(), joined.canonicalize()) else {
            return Err(format!("{} does not exist", joined.display()));
        };
        if !real.starts_with(&base) {
            return Err(format!(
                "{} leads outside the model directory (to {})",
                joined.display(),
                real.display()
            ));
        }
        if !real.is_file() {
            return Err(format!("{} is not a file", joined.display()));
        }
        Ok(real)
    }
}
