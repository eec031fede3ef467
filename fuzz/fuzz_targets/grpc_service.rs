//! The gRPC service end to end: a sequence of calls to the
//! `GRPCInferenceService` implementation `sluice serve` runs
//! (`sluice::fuzzing::Harness`: the real service over the models of
//! tests/models), with arbitrary protobuf requests: inference, model
//! metadata, readiness, configuration and statistics, repository index,
//! load and unload with arbitrary parameters, and log settings.
//!
//! Properties: no panic; every status code is in the documented error
//! table (`INTERNAL` is a crash) with a message; and after the input the
//! repository is restored and a known-good request succeeds.
//!
//! Input: up to 8 calls, each
//! `[method][flags][name][length: u16 LE][length bytes of protobuf]`.
//! `method` picks the call (the order of `METHODS`), the bytes are its
//! request message; flags bit 0 replaces the model name with one of the
//! repository's (or an odd one) picked by `name`, bit 1 clears the
//! version. A message prost cannot decode is skipped (tonic answers it
//! before the service). fuzz/make_seeds.py writes one seed per method.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sluice::fuzzing::{GrpcCall, GrpcReply};
use sluice::grpc::pb;

const ODD_NAMES: &[&str] = &["", "nope", "..", ".hidden", "a/b", "\u{e9}", "iris "];

const MAX_CALLS: usize = 8;

fn model_name(byte: u8) -> String {
    let models = common::harness().models();
    let i = usize::from(byte) % (models.len() + ODD_NAMES.len());
    match models.get(i) {
        Some(m) => m.clone(),
        None => ODD_NAMES[i - models.len()].to_string(),
    }
}

/// Decodes one call; `None` when the bytes are not its message.
fn call(method: u8, flags: u8, name: u8, bytes: &[u8]) -> Option<GrpcCall> {
    let fix_name = |n: &mut String| {
        if flags & 1 != 0 {
            *n = model_name(name);
        }
    };
    let fix_version = |v: &mut String| {
        if flags & 2 != 0 {
            v.clear();
        }
    };
    Some(match method % 12 {
        0 => GrpcCall::ServerLive,
        1 => GrpcCall::ServerReady,
        2 => GrpcCall::ServerMetadata,
        3 => {
            let mut r = pb::ModelReadyRequest::decode(bytes).ok()?;
            fix_name(&mut r.name);
            fix_version(&mut r.version);
            GrpcCall::ModelReady(r)
        }
        4 => {
            let mut r = pb::ModelMetadataRequest::decode(bytes).ok()?;
            fix_name(&mut r.name);
            fix_version(&mut r.version);
            GrpcCall::ModelMetadata(r)
        }
        5 => {
            let mut r = pb::ModelInferRequest::decode(bytes).ok()?;
            fix_name(&mut r.model_name);
            fix_version(&mut r.model_version);
            GrpcCall::ModelInfer(r)
        }
        6 => {
            let mut r = pb::ModelConfigRequest::decode(bytes).ok()?;
            fix_name(&mut r.name);
            fix_version(&mut r.version);
            GrpcCall::ModelConfig(r)
        }
        7 => {
            let mut r = pb::ModelStatisticsRequest::decode(bytes).ok()?;
            fix_name(&mut r.name);
            fix_version(&mut r.version);
            GrpcCall::ModelStatistics(r)
        }
        8 => GrpcCall::RepositoryIndex(pb::RepositoryIndexRequest::decode(bytes).ok()?),
        9 => {
            let mut r = pb::RepositoryModelLoadRequest::decode(bytes).ok()?;
            fix_name(&mut r.model_name);
            GrpcCall::RepositoryModelLoad(r)
        }
        10 => {
            let mut r = pb::RepositoryModelUnloadRequest::decode(bytes).ok()?;
            fix_name(&mut r.model_name);
            GrpcCall::RepositoryModelUnload(r)
        }
        _ => GrpcCall::LogSettings(pb::LogSettingsRequest::decode(bytes).ok()?),
    })
}

fn check(call: &GrpcCall, reply: &Result<GrpcReply, sluice::fuzzing::Status>) {
    match reply {
        Ok(GrpcReply::Infer(r)) => {
            // Outputs travel in raw_output_contents, one per output.
            assert!(
                r.raw_output_contents.is_empty() || r.raw_output_contents.len() == r.outputs.len(),
                "{} outputs but {} raw contents for {call:?}",
                r.outputs.len(),
                r.raw_output_contents.len()
            );
        }
        Ok(GrpcReply::Other) => {}
        Err(status) => {
            assert!(
                common::documented_grpc_code(status.code()),
                "code {:?} is not in the documented table: {status:?} for {call:?}",
                status.code()
            );
            assert!(
                !status.message().is_empty(),
                "{:?} without a message for {call:?}",
                status.code()
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let harness = common::harness();
    let mut rest = data;
    for _ in 0..MAX_CALLS {
        let Some((&[method, flags, name, lo, hi], tail)) = rest.split_first_chunk::<5>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([lo, hi])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let Some(call) = call(method, flags, name, bytes) else {
            continue;
        };
        common::trace(format_args!("call: {call:?}"));
        let reply = harness.grpc(call.clone());
        common::trace(format_args!("reply: {reply:?}"));
        check(&call, &reply);
    }
    common::after_input();
});
