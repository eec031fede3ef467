//! Builds the request payload: either random tensors generated from the
//! model's metadata (REST `GET /v2/models/{m}` or gRPC `ModelMetadata`) or the
//! KServe v2 `inputs` of a user-supplied JSON file.

use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Deserialize;
use serde_json::Value;
use tonic::transport::Channel;

use crate::client::{grpc_client, model_url};
use crate::proto::ModelMetadataRequest;
use crate::tensor::{DataType, InputTensor, TensorData, element_count};

/// Name, datatype and (possibly dynamic) shape of a model tensor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// KServe v2 datatype name.
    pub datatype: String,
    /// Shape; -1 marks a dynamic dimension.
    #[serde(default)]
    pub shape: Vec<i64>,
}

/// The parts of the model metadata the generator needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModelMeta {
    /// Model inputs.
    #[serde(default)]
    pub inputs: Vec<TensorSpec>,
    /// Model outputs.
    #[serde(default)]
    pub outputs: Vec<TensorSpec>,
}

/// Fetches model metadata over REST.
pub async fn metadata_rest(
    http: &reqwest::Client,
    base: &str,
    model: &str,
    version: Option<&str>,
) -> Result<ModelMeta> {
    let url = model_url(base, model, version);
    let resp = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("reading GET {url}"))?;
    if !status.is_success() {
        bail!(
            "GET {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("parsing metadata from {url}"))
}

/// Fetches model metadata over gRPC.
pub async fn metadata_grpc(
    channel: Channel,
    model: &str,
    version: Option<&str>,
) -> Result<ModelMeta> {
    let req = ModelMetadataRequest {
        name: model.to_string(),
        version: version.unwrap_or_default().to_string(),
    };
    let resp = grpc_client(channel)
        .model_metadata(req)
        .await
        .with_context(|| format!("gRPC ModelMetadata for {model:?}"))?
        .into_inner();
    let conv = |ts: Vec<crate::proto::model_metadata_response::TensorMetadata>| {
        ts.into_iter()
            .map(|t| TensorSpec {
                name: t.name,
                datatype: t.datatype,
                shape: t.shape,
            })
            .collect()
    };
    Ok(ModelMeta {
        inputs: conv(resp.inputs),
        outputs: conv(resp.outputs),
    })
}

/// Request payload plus the number of rows it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Input tensors, in order.
    pub inputs: Vec<InputTensor>,
    /// Output names (for binary output requests); may be empty.
    pub outputs: Vec<String>,
    /// Rows (batch entries) per request.
    pub rows: u64,
}

/// A model is batchable when every input's first dimension is -1.
pub fn is_batchable(meta: &ModelMeta) -> bool {
    !meta.inputs.is_empty() && meta.inputs.iter().all(|t| t.shape.first() == Some(&-1))
}

/// Replaces -1 dims: the first by `batch` when `batchable`, the rest by `dynamic`.
pub fn resolve_shape(shape: &[i64], batchable: bool, batch: i64, dynamic: i64) -> Vec<i64> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| match (i, d) {
            (0, -1) if batchable => batch,
            (_, d) if d < 0 => dynamic,
            (_, d) => d,
        })
        .collect()
}

/// Random inputs of the right shapes and datatypes for `meta`.
pub fn generate(
    meta: &ModelMeta,
    batch_size: u64,
    dynamic_dim: i64,
    string_len: usize,
    seed: u64,
) -> Result<Workload> {
    if meta.inputs.is_empty() {
        bail!("the model metadata lists no inputs");
    }
    let batchable = is_batchable(meta);
    let batch = i64::try_from(batch_size).context("--batch-size too large")?;
    let mut rng = StdRng::seed_from_u64(seed);
    let inputs = meta
        .inputs
        .iter()
        .map(|spec| {
            let dtype = DataType::parse(&spec.datatype)
                .with_context(|| format!("input {:?}", spec.name))?;
            let shape = resolve_shape(&spec.shape, batchable, batch, dynamic_dim);
            let n = element_count(&shape).with_context(|| format!("input {:?}", spec.name))?;
            let data = TensorData::random(dtype, n, string_len, &mut rng);
            Ok(InputTensor {
                name: spec.name.clone(),
                shape,
                data,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Workload {
        inputs,
        outputs: meta.outputs.iter().map(|t| t.name.clone()).collect(),
        rows: if batchable { batch_size } else { 1 },
    })
}

#[derive(Deserialize)]
struct FileInput {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    data: Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InputFile {
    Request { inputs: Vec<FileInput> },
    List(Vec<FileInput>),
}

/// Parses a KServe v2 request JSON (`{"inputs": [...]}` or a bare list of
/// inputs with inline `data`, possibly nested). Rows per request is the first
/// dimension of the first input (1 for scalars).
pub fn parse_input_file(text: &str) -> Result<Vec<InputTensor>> {
    let file: InputFile = serde_json::from_str(text).context("parsing input file")?;
    let inputs = match file {
        InputFile::Request { inputs } | InputFile::List(inputs) => inputs,
    };
    if inputs.is_empty() {
        bail!("input file has no inputs");
    }
    inputs
        .into_iter()
        .map(|i| {
            let dtype =
                DataType::parse(&i.datatype).with_context(|| format!("input {:?}", i.name))?;
            let data = TensorData::from_json(dtype, &i.data)
                .with_context(|| format!("input {:?}", i.name))?;
            let n = element_count(&i.shape).with_context(|| format!("input {:?}", i.name))?;
            if n != data.len() {
                bail!(
                    "input {:?}: shape {:?} needs {n} elements, data has {}",
                    i.name,
                    i.shape,
                    data.len()
                );
            }
            Ok(InputTensor {
                name: i.name,
                shape: i.shape,
                data,
            })
        })
        .collect()
}

/// Loads [`parse_input_file`] from `path`; `meta` (if known) supplies output names.
pub fn load_input_file(path: &Path, meta: Option<&ModelMeta>) -> Result<Workload> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let inputs = parse_input_file(&text).with_context(|| format!("in {}", path.display()))?;
    let rows = inputs
        .first()
        .and_then(|t| t.shape.first())
        .and_then(|&d| u64::try_from(d).ok())
        .filter(|&d| d > 0)
        .unwrap_or(1);
    Ok(Workload {
        inputs,
        outputs: meta
            .map(|m| m.outputs.iter().map(|t| t.name.clone()).collect())
            .unwrap_or_default(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(shapes: &[&[i64]]) -> ModelMeta {
        ModelMeta {
            inputs: shapes
                .iter()
                .enumerate()
                .map(|(i, s)| TensorSpec {
                    name: format!("in{i}"),
                    datatype: "FP32".into(),
                    shape: s.to_vec(),
                })
                .collect(),
            outputs: vec![TensorSpec {
                name: "out".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 3],
            }],
        }
    }

    #[test]
    fn shapes_resolve_batch_and_dynamic_dims() {
        assert_eq!(resolve_shape(&[-1, 4], true, 8, 2), vec![8, 4]);
        assert_eq!(resolve_shape(&[-1, -1, 3], true, 8, 2), vec![8, 2, 3]);
        assert_eq!(resolve_shape(&[-1, 4], false, 8, 2), vec![2, 4]);
        let w = generate(&meta(&[&[-1, 4], &[-1]]), 8, 1, 4, 0).unwrap();
        assert_eq!(w.rows, 8);
        assert_eq!(w.inputs[0].shape, vec![8, 4]);
        assert_eq!(w.inputs[0].data.len(), 32);
        assert_eq!(w.outputs, vec!["out".to_string()]);
        let fixed = generate(&meta(&[&[1, 4]]), 8, 1, 4, 0).unwrap();
        assert_eq!((fixed.rows, fixed.inputs[0].shape.clone()), (1, vec![1, 4]));
    }

    #[test]
    fn metadata_json_and_input_file_parse() {
        let m: ModelMeta = serde_json::from_str(
            r#"{"name":"iris","versions":["1"],"platform":"onnxruntime_onnx",
                "inputs":[{"name":"x","datatype":"FP32","shape":[-1,4]}],
                "outputs":[{"name":"y","datatype":"INT64","shape":[-1]}]}"#,
        )
        .unwrap();
        assert!(is_batchable(&m));
        let ins = parse_input_file(
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4]]},
                          {"name":"s","datatype":"BYTES","shape":[1],"data":["hey"]}]}"#,
        )
        .unwrap();
        assert_eq!(ins[0].data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]));
        assert!(
            parse_input_file(r#"[{"name":"x","datatype":"FP32","shape":[3],"data":[1]}]"#).is_err()
        );
        assert!(parse_input_file(r#"{"inputs":[]}"#).is_err());
    }
}
