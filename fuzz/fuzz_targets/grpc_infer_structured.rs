//! The gRPC request conversion (`sluice::grpc::convert::infer_request`)
//! driven by structured input: `arbitrary` builds a `ModelInferRequest` whose
//! fields are mostly well-formed (known datatypes, small shapes, typed
//! contents or raw contents), so the fuzzer spends its time in the
//! conversion's checks rather than in protobuf framing. Properties as in
//! `grpc_infer_request`.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::grpc::convert::infer_request;
use sluice::grpc::pb::infer_parameter::ParameterChoice;
use sluice::grpc::pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use sluice::grpc::pb::{InferParameter, InferTensorContents, ModelInferRequest};
use sluice::tensor::DataType;
use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug, Arbitrary)]
enum Datatype {
    Known(u8),
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Dim {
    Small(u8),
    Any(i64),
}

#[derive(Debug, Arbitrary)]
enum Param {
    Bool(bool),
    Int64(i64),
    String(String),
    Double(f64),
    Uint64(u64),
}

#[derive(Debug, Arbitrary)]
struct Contents {
    bools: Vec<bool>,
    ints: Vec<i32>,
    int64s: Vec<i64>,
    uints: Vec<u32>,
    uint64s: Vec<u64>,
    fp32s: Vec<f32>,
    fp64s: Vec<f64>,
    bytes: Vec<Vec<u8>>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    name: String,
    datatype: Datatype,
    shape: Vec<Dim>,
    contents: Option<Contents>,
}

#[derive(Debug, Arbitrary)]
struct Request {
    model_version: String,
    id: String,
    inputs: Vec<Input>,
    outputs: Vec<String>,
    raw_input_contents: Vec<Vec<u8>>,
    priority: Option<Param>,
    timeout: Option<Param>,
}

fn param(p: Param) -> InferParameter {
    InferParameter {
        parameter_choice: Some(match p {
            Param::Bool(v) => ParameterChoice::BoolParam(v),
            Param::Int64(v) => ParameterChoice::Int64Param(v),
            Param::String(v) => ParameterChoice::StringParam(v),
            Param::Double(v) => ParameterChoice::DoubleParam(v),
            Param::Uint64(v) => ParameterChoice::Uint64Param(v),
        }),
    }
}

fn message(r: Request) -> ModelInferRequest {
    let mut parameters = HashMap::new();
    if let Some(p) = r.priority {
        parameters.insert("priority".to_string(), param(p));
    }
    if let Some(p) = r.timeout {
        parameters.insert("timeout".to_string(), param(p));
    }
    let inputs = r
        .inputs
        .into_iter()
        .map(|i| InferInputTensor {
            name: i.name,
            datatype: match i.datatype {
                Datatype::Known(k) => DataType::ALL[usize::from(k) % DataType::ALL.len()]
                    .as_str()
                    .to_string(),
                Datatype::Other(s) => s,
            },
            shape: i
                .shape
                .into_iter()
                .map(|d| match d {
                    Dim::Small(n) => i64::from(n % 8),
                    Dim::Any(n) => n,
                })
                .collect(),
            parameters: HashMap::new(),
            contents: i.contents.map(|c| InferTensorContents {
                bool_contents: c.bools,
                int_contents: c.ints,
                int64_contents: c.int64s,
                uint_contents: c.uints,
                uint64_contents: c.uint64s,
                fp32_contents: c.fp32s,
                fp64_contents: c.fp64s,
                bytes_contents: c.bytes.into_iter().map(Bytes::from).collect(),
            }),
        })
        .collect();
    ModelInferRequest {
        model_name: "m".to_string(),
        model_version: r.model_version,
        id: r.id,
        parameters,
        inputs,
        outputs: r
            .outputs
            .into_iter()
            .map(|name| InferRequestedOutputTensor {
                name,
                parameters: HashMap::new(),
            })
            .collect(),
        raw_input_contents: r.raw_input_contents.into_iter().map(Bytes::from).collect(),
    }
}

/// `SLUICE_FUZZ_DEBUG=1`: print each outcome (to pick seeds, or to see what
/// an artifact decodes to: `fuzz/target/.../grpc_infer_structured <file>`).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("SLUICE_FUZZ_DEBUG").is_some())
}

fuzz_target!(|request: Request| {
    let max_elements = sluice::service::Limits::default().max_tensor_elements;
    let message = message(request);
    if debug() {
        eprintln!("message: {message:?}");
    }
    let converted = infer_request(message, max_elements);
    if debug() {
        match &converted {
            Ok(r) => eprintln!("converted: {} input(s)", r.inputs.len()),
            Err(e) => eprintln!("rejected: {e}"),
        }
    }
    let Ok(converted) = converted else {
        return;
    };
    for tensor in &converted.inputs {
        if let Err(e) = tensor.check_consistent() {
            panic!("converted an inconsistent tensor: {e}");
        }
    }
});
