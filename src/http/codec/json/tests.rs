//! The JSON tensor codec against the serde path and the wire format.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn decode(datatype: &str, shape: &[i64], data: &str) -> Result<Tensor> {
    let body = format!(
        r#"{{"inputs":[{{"name":"x","shape":{shape:?},"datatype":"{datatype}","data":{data}}}]}}"#
    );
    let req: RequestJson<'_> =
        serde_json::from_str(&body).map_err(|e| Error::invalid(e.to_string()))?;
    decode_input(&req.inputs[0], 1 << 20)
}

fn err(datatype: &str, shape: &[i64], data: &str) -> String {
    decode(datatype, shape, data).unwrap_err().to_string()
}

#[test]
fn flat_and_nested_data_decode_alike() {
    let flat = decode("FP32", &[2, 2], "[1, 2, 3.5, -4]").unwrap();
    let nested = decode("FP32", &[2, 2], "[[1, 2], [3.5, -4]]").unwrap();
    assert_eq!(flat, nested);
    let TensorData::Fixed(b) = flat.data else {
        panic!()
    };
    let v: Vec<f32> = b
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(v, [1.0, 2.0, 3.5, -4.0]);
}

#[test]
fn every_dtype_decodes() {
    for (dt, data) in [
        ("BOOL", "[true, false]"),
        ("UINT8", "[0, 255]"),
        ("UINT16", "[0, 65535]"),
        ("UINT32", "[0, 4294967295]"),
        ("UINT64", "[0, 18446744073709551615]"),
        ("INT8", "[-128, 127]"),
        ("INT16", "[-32768, 32767]"),
        ("INT32", "[-2147483648, 2147483647]"),
        ("INT64", "[-9223372036854775808, 9223372036854775807]"),
        ("FP16", "[1.5, -65504]"),
        ("FP32", "[1e-3, 3]"),
        ("FP64", "[1e300, -2]"),
        ("BF16", "[1.5, -2]"),
        ("BYTES", r#"["a", "βγ"]"#),
    ] {
        let t = decode(dt, &[2], data).unwrap_or_else(|e| panic!("{dt}: {e}"));
        assert_eq!(t.data.len(t.datatype), 2, "{dt}");
    }
}

#[test]
fn wrong_kinds_name_input_element_and_value() {
    assert_eq!(
        err("FP32", &[2], r#"[1, "a"]"#),
        "input 'x': element 1 must be a number (FP32), got the string \"a\""
    );
    assert_eq!(
        err("INT32", &[2], "[1, 1.5]"),
        "input 'x': element 1 must be an integer (INT32), got 1.5, a fraction"
    );
    assert_eq!(
        err("UINT8", &[1], "[256]"),
        "input 'x': element 0 must be an integer (UINT8), got 256, out of range for UINT8"
    );
    assert_eq!(
        err("INT8", &[1], "[-129]"),
        "input 'x': element 0 must be an integer (INT8), got -129, out of range for INT8"
    );
    assert_eq!(
        err("BOOL", &[1], "[1]"),
        "input 'x': element 0 must be true or false (BOOL), got 1"
    );
    assert_eq!(
        err("BYTES", &[1], "[1]"),
        "input 'x': element 0 must be a string (BYTES), got 1"
    );
    assert_eq!(
        err("FP16", &[1], "[70000]"),
        "input 'x': element 0 must be a number (FP16), got 70000, out of range for FP16"
    );
    assert_eq!(
        err("FP32", &[1], "[null]"),
        "input 'x': element 0 must be a number (FP32), got null"
    );
}

#[test]
fn counts_and_shapes_are_checked_before_allocation() {
    assert_eq!(
        err("FP32", &[2, 2], "[1, 2, 3]"),
        "input 'x': shape [2, 2] needs 4 elements, got 3"
    );
    assert_eq!(
        err("FP32", &[1], "[1, 2]"),
        "input 'x': data has more than the 1 elements its shape declares"
    );
    assert!(err("FP32", &[-1, 2], "[]").contains("negative dimension"));
    assert!(err("FP32", &[i64::MAX, i64::MAX], "[]").contains("overflows the element count"));
    assert!(err("FP32", &[1 << 21], "[]").contains("limit of 1048576"));
    assert!(err("FLOAT32", &[1], "[1]").contains("unknown datatype 'FLOAT32'"));
}

/// Fuzzing regression (fuzz target `json_request`, round trip): serde_json's
/// default float parser read this shortest representation one ULP high;
/// `float_roundtrip` makes FP64 JSON bit-exact, as Python and Rust print it.
#[test]
fn fuzz_regression_fp64_parses_exactly() {
    let t = decode("FP64", &[1], "[2.1111111000000014]").unwrap();
    let TensorData::Fixed(b) = t.data else {
        panic!("FP64 is fixed-size")
    };
    assert_eq!(b[..], 2.1111111000000014f64.to_le_bytes());
}

/// Fuzzing regression (fuzz target `json_request`, whose
/// `-malloc_limit_mb=128` reports it as out-of-memory): a 70-byte body
/// whose shape declares 2^26 FP64 elements made the decoder reserve
/// 512 MiB before reading `data`. The reservation is now bounded by the data's
/// length; with a limit that admits the shape (2^40 elements, 8 TiB) the
/// old code aborted on the allocation, the new one rejects the body.
#[test]
fn fuzz_regression_huge_shape_reserves_by_data_not_shape() {
    let input: &[u8] =
        br#"{"inputs":[{"name":"x","shape":[67108864],"datatype":"FP64","data":[]}]}"#;
    let req: RequestJson<'_> = serde_json::from_slice(input).unwrap();
    let err = decode_input(&req.inputs[0], 64 << 20).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input 'x': shape [67108864] needs 67108864 elements, got 0"
    );
    let input: &[u8] =
        br#"{"inputs":[{"name":"x","shape":[1099511627776],"datatype":"FP64","data":[1]}]}"#;
    let req: RequestJson<'_> = serde_json::from_slice(input).unwrap();
    let err = decode_input(&req.inputs[0], usize::MAX).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(
        err.to_string()
            .contains("needs 1099511627776 elements, got 1"),
        "{err}"
    );
}

#[test]
fn encode_round_trips() {
    let t = decode("FP16", &[3], "[1.5, -2, 0.25]").unwrap();
    let json = serde_json::to_string(&DataJson {
        datatype: t.datatype,
        data: &t.data,
    })
    .unwrap();
    assert_eq!(json, "[1.5,-2.0,0.25]");
    let t = decode("BOOL", &[2], "[true, false]").unwrap();
    let json = serde_json::to_string(&DataJson {
        datatype: t.datatype,
        data: &t.data,
    })
    .unwrap();
    assert_eq!(json, "[true,false]");
}

/// `decode` with the serde path alone: what every answer was before the
/// fast path.
fn decode_serde(datatype: &str, shape: &[i64], data: &str) -> Result<Tensor> {
    FAST.with(|f| f.set(false));
    let r = decode(datatype, shape, data);
    FAST.with(|f| f.set(true));
    r
}

const NUMERIC: [&str; 12] = [
    "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
    "FP64", "BF16",
];

/// Both paths on the same text: the same tensor, or the same message.
fn same_as_serde(datatype: &str, n: usize, data: &str) -> Result<(), TestCaseError> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let fast = decode(datatype, &[n], data).map_err(|e| e.to_string());
    let slow = decode_serde(datatype, &[n], data).map_err(|e| e.to_string());
    prop_assert_eq!(fast, slow, "{} {}", datatype, data);
    Ok(())
}

/// One element as a client might write it: numbers in many spellings,
/// and malformed or non-numeric tokens.
fn element() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|v| format!("{v}")),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        any::<f32>().prop_map(|v| format!("{v}")),
        any::<f32>().prop_map(|v| format!("{:?}", f64::from(v))),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        (-300i32..300).prop_map(|v| v.to_string()),
        (-1000i64..1000, 0u32..4, -400i32..400).prop_map(|(m, d, e)| format!("{m}.{d}e{e}")),
        "-?[0-9]{1,3}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})?",
        "[-+0-9.eE]{1,6}",
        prop::sample::select(vec![
            "-0",
            "-0.0",
            "0.0",
            "0",
            "1e-400",
            "-1e-400",
            "1e400",
            "1E+2",
            "1e-0",
            "1e99999999999999999999",
            "18446744073709551616",
            "-9223372036854775809",
            "NaN",
            "Infinity",
            "-Infinity",
            "null",
            "true",
            "\"1\"",
            "{}",
            "01",
            "1.",
            ".5",
            "+1",
            "0x10",
            "1.5.3",
            "--1",
            "1e",
            "1e+",
            "[1]",
            "[]",
        ])
        .prop_map(str::to_string),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any data text: the fast path answers exactly as the serde path,
    /// malformed and out-of-range numbers included.
    #[test]
    fn fast_path_answers_as_serde(
        dt in prop::sample::select(NUMERIC.to_vec()),
        elements in prop::collection::vec(element(), 0..6),
        nest in any::<bool>(),
        extra in 0usize..2,
    ) {
        let data = if nest && elements.len() >= 2 {
            let (a, b) = elements.split_at(elements.len() / 2);
            format!("[[{}], [{}]]", a.join(","), b.join(" , "))
        } else {
            format!("[{}]", elements.join(", "))
        };
        same_as_serde(dt, elements.len(), &data)?;
        // Shapes that do not match the data: the same count messages.
        same_as_serde(dt, elements.len() + extra + 1, &data)?;
        if !elements.is_empty() {
            same_as_serde(dt, elements.len() - 1, &data)?;
        }
    }

    /// Arbitrary finite floats encode and decode bit for bit.
    #[test]
    fn floats_round_trip_exactly(
        v32 in prop::collection::vec(any::<f32>().prop_filter("finite", |v| v.is_finite()), 1..20),
        v64 in prop::collection::vec(any::<f64>().prop_filter("finite", |v| v.is_finite()), 1..20),
        h in prop::collection::vec(any::<u16>(), 1..20),
    ) {
        let bytes32: Vec<u8> = v32.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes64: Vec<u8> = v64.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f16s: Vec<u8> = h.iter().map(|&b| f16::from_bits(b)).filter(|v| v.is_finite())
            .flat_map(|v| v.to_le_bytes()).collect();
        let bf16s: Vec<u8> = h.iter().map(|&b| bf16::from_bits(b)).filter(|v| v.is_finite())
            .flat_map(|v| v.to_le_bytes()).collect();
        for (dt, bytes) in [("FP32", bytes32), ("FP64", bytes64), ("FP16", f16s), ("BF16", bf16s)] {
            round_trip(dt, bytes)?;
        }
    }

    /// Arbitrary integers of every integer datatype round-trip exactly.
    #[test]
    fn integers_round_trip_exactly(raw in prop::collection::vec(any::<u8>(), 0..64)) {
        for dt in ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"] {
            let size = parse_datatype("x", dt).unwrap().size().unwrap();
            let whole = raw.len() / size * size;
            round_trip(dt, raw[..whole].to_vec())?;
        }
    }
}

/// Packed `bytes` of `dt` → JSON (the response encoder) → both decoders →
/// the same bytes.
fn round_trip(dt: &str, bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let datatype = parse_datatype("x", dt).unwrap();
    let n = bytes.len() / datatype.size().unwrap();
    let data = TensorData::Fixed(Bytes::from(bytes));
    let json = serde_json::to_string(&DataJson {
        datatype,
        data: &data,
    })
    .unwrap();
    let n = i64::try_from(n).unwrap();
    let fast =
        decode(dt, &[n], &json).map_err(|e| TestCaseError::fail(format!("{dt} {json}: {e}")))?;
    prop_assert_eq!(&fast.data, &data, "{} {}", dt, json);
    let slow = decode_serde(dt, &[n], &json).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&slow.data, &data, "{} {}", dt, json);
    Ok(())
}

/// Plain numeric arrays take the fast path; anything else defers.
#[test]
fn fast_path_takes_plain_numbers_only() {
    let fast = |dt: &str, n: usize, data: &str| {
        let datatype = parse_datatype("x", dt).unwrap();
        let mut sink = Sink {
            name: "x",
            datatype,
            expected: n,
            seen: 0,
            fixed: Vec::new(),
            strings: Vec::new(),
        };
        numbers_fast(data, &mut sink).map(|()| sink.fixed)
    };
    let v = fast("FP32", 4, " [[0.1, -2e3],\n [3, 4.5E-1]] ").unwrap();
    assert_eq!(v.len(), 16);
    assert!(fast("INT64", 2, "[-5, 18]").is_some());
    for (dt, n, data) in [
        ("FP32", 1, "[\"1\"]"),
        ("FP32", 1, "[null]"),
        ("FP32", 1, "1"),
        ("FP32", 1, "[1] x"),
        ("FP32", 1, "[1, 2]"),
        ("INT8", 1, "[300]"),
        ("INT8", 1, "[-0]"),
        ("UINT64", 1, "[18446744073709551616]"),
        ("BOOL", 1, "[1]"),
        ("FP32", 1, "[1e999]"),
    ] {
        assert!(fast(dt, n, data).is_none(), "{dt} {data}");
    }
}

/// Malformed numbers: the same 400 messages as before the fast path.
/// (Most are refused when the request body is parsed, before `data` is
/// decoded; the rest by the serde path, which the fast path defers to.)
#[test]
fn malformed_numbers_keep_their_messages() {
    for (dt, data, msg) in [
        ("FP32", "[01]", "invalid number"),
        ("FP32", "[1.]", "invalid number"),
        ("FP32", "[1e]", "invalid number"),
        ("FP32", "[-]", "invalid number"),
        ("FP32", "[.5]", "expected value"),
        ("FP32", "[+1]", "expected value"),
        ("FP32", "[1e400]", "number out of range"),
        ("FP32", "[NaN]", "expected value"),
        ("FP32", "[1,]", "expected value"),
        (
            "FP32",
            "[3.5e38]",
            "input 'x': element 0 must be a number (FP32), got 350000000000000000000000000000000000000, out of range for FP32",
        ),
        (
            "FP16",
            "[65520]",
            "input 'x': element 0 must be a number (FP16), got 65520, out of range for FP16",
        ),
        (
            "INT8",
            "[1e3]",
            "input 'x': element 0 must be an integer (INT8), got 1000, out of range for INT8",
        ),
        (
            "UINT64",
            "[18446744073709551616]",
            "input 'x': element 0 must be an integer (UINT64), got 18446744073709552000, out of range for UINT64",
        ),
        (
            "INT32",
            "[0.5]",
            "input 'x': element 0 must be an integer (INT32), got 0.5, a fraction",
        ),
    ] {
        let fast = decode(dt, &[1], data).map_err(|e| e.to_string());
        assert_eq!(
            fast,
            decode_serde(dt, &[1], data).map_err(|e| e.to_string()),
            "{data}"
        );
        let got = fast.unwrap_err();
        assert!(got.starts_with(msg), "{data}: {got}");
    }
    // `-0` reads as the float -0.0, which is 0 in integer data.
    assert_eq!(
        decode("UINT8", &[1], "[-0]").unwrap().data,
        decode_serde("UINT8", &[1], "[-0]").unwrap().data
    );
}

/// `parameters` keeps the keys the decoder reads, the last where one
/// repeats, as `serde_json::Map` would; anything else is checked as JSON and
/// skipped; a non-object is refused with serde's own words.
#[test]
fn parameters_keep_the_keys_the_decoder_reads() {
    let body = r#"{"parameters": {"priority": 1, "custom": {"deep": [1, {"x": "y"}]},
        "timeout": 5, "priority": 3, "binary_data_output": true, "note": "\u00e9"},
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1],
            "parameters": {"binary_data_size": null, "other": 1}}],
        "outputs": [{"name": "y", "parameters": {"classification": 2, "binary_data": false}}]}"#;
    let req: RequestJson<'_> = serde_json::from_str(body).unwrap();
    let params = req.parameters.as_ref();
    assert_eq!(param_u64(params, "priority").unwrap(), Some(3));
    assert_eq!(param_u64(params, "timeout").unwrap(), Some(5));
    assert_eq!(
        param_bool(params, "binary_data_output").unwrap(),
        Some(true)
    );
    assert_eq!(params.unwrap().get("custom"), None);
    assert_eq!(params.unwrap().get("note"), None);
    let input = req.inputs[0].parameters.as_ref();
    assert_eq!(param_u64(input, "binary_data_size").unwrap(), None);
    let output = req.outputs.as_ref().unwrap()[0].parameters.as_ref();
    assert_eq!(param_u64(output, "classification").unwrap(), Some(2));
    assert_eq!(param_bool(output, "binary_data").unwrap(), Some(false));

    let wrong: Result<RequestJson<'_>, _> =
        serde_json::from_str(r#"{"parameters": {"priority": -1}, "inputs": []}"#);
    let e = param_u64(wrong.unwrap().parameters.as_ref(), "priority").unwrap_err();
    assert_eq!(
        e.to_string(),
        "parameter 'priority' must be a non-negative integer, got -1"
    );
    for bad in [
        r#"{"parameters": 5, "inputs": []}"#,
        r#"{"parameters": [], "inputs": []}"#,
    ] {
        let e = serde_json::from_str::<RequestJson<'_>>(bad).unwrap_err();
        assert!(e.to_string().contains("expected a map"), "{e}");
    }
    let e = serde_json::from_str::<RequestJson<'_>>(r#"{"parameters": {"a": [1,}, "inputs": []}"#)
        .unwrap_err();
    assert!(e.is_syntax(), "{e}");
}
