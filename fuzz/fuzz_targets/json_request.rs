//! The KServe v2 JSON tensor decoder (`sluice::http::codec::json`): arbitrary bytes
//! as an infer request body, every input decoded with the server's default
//! element limit. Properties: no panic, no allocation beyond the body's size
//! class; a decoded tensor holds exactly the elements its shape declares; and
//! encoding it back to JSON (what a response carries) and decoding again
//! gives the same tensor.
//!
//! Float exactness: serde_json without its `float_roundtrip` feature parses
//! some decimals 1 ULP off (e.g. `2.1111111000000014`, Python's own repr of
//! 0x4000e38e3765c7de, parses as ...c7df), so FP64/FP32 can only round-trip
//! exactly when the server is built with that feature. The target checks
//! which parser it has and, without the feature, allows 1 ULP for FP64 and
//! FP32 (see docs/fuzzing-results.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::http::codec::json::{self, DataJson, InputJson, RequestJson};
use sluice::tensor::{DataType, Tensor, TensorData};
use std::sync::OnceLock;

/// Whether serde_json parses decimals exactly (its `float_roundtrip` feature).
fn exact_floats() -> bool {
    static EXACT: OnceLock<bool> = OnceLock::new();
    *EXACT.get_or_init(|| {
        serde_json::from_str::<f64>("2.1111111000000014").ok() == Some(2.1111111000000014)
    })
}

/// Elements of two FP64 or FP32 tensors differ by at most one ULP.
fn within_one_ulp(a: &Tensor, b: &Tensor) -> bool {
    let (TensorData::Fixed(x), TensorData::Fixed(y)) = (&a.data, &b.data) else {
        return false;
    };
    if a.shape != b.shape || x.len() != y.len() {
        return false;
    }
    match a.datatype {
        DataType::Fp64 => x.chunks_exact(8).zip(y.chunks_exact(8)).all(|(p, q)| {
            let p = i64::from_le_bytes(p.try_into().expect("8 bytes"));
            let q = i64::from_le_bytes(q.try_into().expect("8 bytes"));
            p.abs_diff(q) <= 1
        }),
        DataType::Fp32 => x.chunks_exact(4).zip(y.chunks_exact(4)).all(|(p, q)| {
            let p = i32::from_le_bytes(p.try_into().expect("4 bytes"));
            let q = i32::from_le_bytes(q.try_into().expect("4 bytes"));
            p.abs_diff(q) <= 1
        }),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let max_elements = sluice::service::Limits::default().max_tensor_elements;
    let Ok(request) = serde_json::from_slice::<RequestJson<'_>>(data) else {
        return;
    };
    let params = request.parameters.as_ref();
    let _ = json::param_u64(params, "priority");
    let _ = json::param_u64(params, "timeout");
    let _ = json::param_bool(params, "binary_data_output");
    for input in &request.inputs {
        let Ok(tensor) = json::decode_input(input, max_elements) else {
            continue;
        };
        if let Err(e) = tensor.check_consistent() {
            panic!("decoded an inconsistent tensor: {e}");
        }
        // Round trip: what the server would send back decodes to the same tensor.
        let encoded = serde_json::to_string(&DataJson {
            datatype: tensor.datatype,
            data: &tensor.data,
        })
        .expect("encoding a decoded tensor");
        let raw = serde_json::value::RawValue::from_string(encoded).expect("valid JSON");
        let again = InputJson {
            name: input.name.clone(),
            shape: input.shape.clone(),
            datatype: input.datatype.clone(),
            parameters: None,
            data: Some(&*raw),
        };
        let back = json::decode_input(&again, max_elements)
            .unwrap_or_else(|e| panic!("re-decoding {}: {e}", raw.get()));
        if back != tensor {
            // (BYTES leave through from_utf8_lossy; JSON strings are UTF-8 already.)
            assert!(
                !exact_floats() && within_one_ulp(&back, &tensor),
                "{} round trip of {}: {back:?} != {tensor:?}",
                tensor.datatype,
                raw.get()
            );
        }
    }
});
