//! gRPC: every RPC of `inference.GRPCInferenceService` through a tonic client
//! generated from the same protos, every dtype against ONNX Runtime's own
//! results, every error code, streaming, health and reflection.

use crate::harness::grpc::{client, raw_request};
use crate::harness::{TestServer, raw_run, test_repo};
use bytes::Bytes;
use half::{bf16, f16};
use sluice::grpc::pb;
use sluice::tensor::{DataType, Tensor, TensorData, encode_raw};
use std::collections::HashMap;
use tonic::Code;
use tonic::transport::Channel;

mod control;
mod infer;

/// A `[2, 3]` tensor `INPUT0` of `dt` with distinct values.
pub fn sample(dt: DataType) -> Tensor {
    let le = |chunks: Vec<Vec<u8>>| TensorData::Fixed(Bytes::from(chunks.concat()));
    let data = match dt {
        DataType::Bool => le((0..6).map(|i| vec![u8::from(i % 2 == 0)]).collect()),
        DataType::Uint8 => le((0..6u8).map(|i| vec![i * 40]).collect()),
        DataType::Uint16 => le((0..6u16)
            .map(|i| (i * 9000).to_le_bytes().to_vec())
            .collect()),
        DataType::Uint32 => le((0..6u32)
            .map(|i| (i * 700_000_000).to_le_bytes().to_vec())
            .collect()),
        DataType::Uint64 => le((0..6u64)
            .map(|i| (i << 61).to_le_bytes().to_vec())
            .collect()),
        DataType::Int8 => le((0..6i8)
            .map(|i| ((i - 3) * 40).to_le_bytes().to_vec())
            .collect()),
        DataType::Int16 => le((0..6i16)
            .map(|i| ((i - 3) * 9000).to_le_bytes().to_vec())
            .collect()),
        DataType::Int32 => le((0..6i32)
            .map(|i| ((i - 3) * 700_000_000).to_le_bytes().to_vec())
            .collect()),
        DataType::Int64 => le((0..6i64)
            .map(|i| ((i - 3) << 61).to_le_bytes().to_vec())
            .collect()),
        DataType::Fp16 => le((0..6)
            .map(|i| f16::from_f32(i as f32 * 0.3 - 1.0).to_le_bytes().to_vec())
            .collect()),
        DataType::Bf16 => le((0..6)
            .map(|i| bf16::from_f32(i as f32 * 0.3 - 1.0).to_le_bytes().to_vec())
            .collect()),
        DataType::Fp32 => le((0..6)
            .map(|i| (i as f32 * 0.1 - 0.25).to_le_bytes().to_vec())
            .collect()),
        DataType::Fp64 => le((0..6)
            .map(|i| (i as f64 * 0.1 - 0.25).to_le_bytes().to_vec())
            .collect()),
        DataType::Bytes => TensorData::Bytes(
            ["a", "βγ", "", "hello", "x y", "🦀"]
                .iter()
                .map(|s| Bytes::from(s.as_bytes()))
                .collect(),
        ),
    };
    Tensor {
        name: "INPUT0".into(),
        datatype: dt,
        shape: vec![2, 3],
        data,
    }
}

pub fn model_for(dt: DataType) -> String {
    let suffix = match dt {
        DataType::Bytes => "string".to_string(),
        other => other.as_str().to_lowercase(),
    };
    format!("dtype_{suffix}")
}

fn param_u64(v: u64) -> pb::InferParameter {
    pb::InferParameter {
        parameter_choice: Some(pb::infer_parameter::ParameterChoice::Uint64Param(v)),
    }
}

fn model_path(name: &str) -> std::path::PathBuf {
    test_repo().join(name).join("1/model.onnx")
}
