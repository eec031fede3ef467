//! Inference over gRPC: every dtype raw and typed, error codes and
//! parameters, message size, a full queue and deadlines, streaming.

use super::*;
use crate::harness::metrics::metric;
use crate::harness::models::{slow_repo, x_grpc};
use crate::harness::wait::{PATIENCE, eventually};

#[tokio::test]
async fn every_dtype_raw_matches_onnxruntime_bit_for_bit() {
    let s = TestServer::start(&test_repo()).await;
    let mut c = client(s.grpc).await;
    for dt in DataType::ALL {
        let model = model_for(dt);
        let input = sample(dt);
        let expected = raw_run(&model_path(&model), std::slice::from_ref(&input));
        let r = c
            .model_infer(raw_request(&model, &[input]))
            .await
            .unwrap_or_else(|e| panic!("{model}: {e}"));
        let r = r.into_inner();
        assert_eq!(r.model_name, model);
        assert_eq!(r.model_version, "1");
        assert_eq!(r.outputs.len(), 2, "{model}");
        assert_eq!(
            r.raw_output_contents.len(),
            2,
            "{model}: always raw_output_contents"
        );
        for (i, out) in r.outputs.iter().enumerate() {
            assert_eq!(out.datatype, dt.as_str());
            assert_eq!(out.shape, [2, 3]);
            assert!(out.contents.is_none());
            assert_eq!(
                r.raw_output_contents[i],
                encode_raw(&expected[i].data),
                "{model} output {i}"
            );
        }
    }
}

#[tokio::test]
async fn typed_contents_decode_like_raw() {
    let s = TestServer::start(&test_repo()).await;
    let mut c = client(s.grpc).await;
    let typed = |dt: DataType, contents: pb::InferTensorContents| pb::ModelInferRequest {
        model_name: model_for(dt),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "INPUT0".into(),
            datatype: dt.as_str().into(),
            shape: vec![2, 3],
            contents: Some(contents),
            ..Default::default()
        }],
        ..Default::default()
    };
    let cases = [
        (
            DataType::Bool,
            pb::InferTensorContents {
                bool_contents: vec![true, false, true, false, true, false],
                ..Default::default()
            },
        ),
        (
            DataType::Uint8,
            pb::InferTensorContents {
                uint_contents: (0..6).map(|i| i * 40).collect(),
                ..Default::default()
            },
        ),
        (
            DataType::Int8,
            pb::InferTensorContents {
                int_contents: (0..6).map(|i| (i - 3) * 40).collect(),
                ..Default::default()
            },
        ),
        (
            DataType::Int64,
            pb::InferTensorContents {
                int64_contents: (0..6).map(|i| (i - 3) << 61).collect(),
                ..Default::default()
            },
        ),
        (
            DataType::Uint64,
            pb::InferTensorContents {
                uint64_contents: (0..6).map(|i| i << 61).collect(),
                ..Default::default()
            },
        ),
        (
            DataType::Fp32,
            pb::InferTensorContents {
                fp32_contents: (0..6).map(|i| i as f32 * 0.1 - 0.25).collect(),
                ..Default::default()
            },
        ),
        (
            DataType::Fp64,
            pb::InferTensorContents {
                fp64_contents: (0..6).map(|i| i as f64 * 0.1 - 0.25).collect(),
                ..Default::default()
            },
        ),
        (
            DataType::Bytes,
            pb::InferTensorContents {
                bytes_contents: ["a", "βγ", "", "hello", "x y", "🦀"]
                    .iter()
                    .map(|s| Bytes::from(s.as_bytes()))
                    .collect(),
                ..Default::default()
            },
        ),
    ];
    for (dt, contents) in cases {
        let via_typed = c
            .model_infer(typed(dt, contents))
            .await
            .unwrap()
            .into_inner();
        let via_raw = c
            .model_infer(raw_request(&model_for(dt), &[sample(dt)]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            via_typed.raw_output_contents, via_raw.raw_output_contents,
            "{dt}"
        );
    }
    // FP16 has no typed field; an out-of-range value names the element.
    let e = c
        .model_infer(typed(DataType::Fp16, pb::InferTensorContents::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("raw_input_contents"),
        "{}",
        e.message()
    );
    let e = c
        .model_infer(typed(
            DataType::Uint8,
            pb::InferTensorContents {
                uint_contents: vec![1, 2, 3, 4, 5, 256],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("element 5"), "{}", e.message());
}

#[tokio::test]
async fn error_codes_and_parameters() {
    let s = TestServer::start_with(&test_repo(), |c| c.limits.max_request_bytes = 4096).await;
    let mut c = client(s.grpc).await;
    let fp32 = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape,
            data: TensorData::Fixed(Bytes::from(vec![0u8; n * 4])),
        }
    };
    let code =
        |r: Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>| r.unwrap_err().code();

    assert_eq!(
        code(
            c.model_infer(raw_request("nope", &[fp32(vec![1, 1])]))
                .await
        ),
        Code::NotFound
    );
    let mut bad = raw_request("dynamic2", &[fp32(vec![1, 2])]);
    bad.inputs[0].datatype = "FLOAT32".into();
    let e = c.model_infer(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("unknown datatype 'FLOAT32'"),
        "{}",
        e.message()
    );
    let mut wrong = raw_request("dynamic2", &[fp32(vec![1, 2])]);
    wrong.inputs[0].datatype = "FP64".into();
    assert_eq!(
        code(c.model_infer(wrong).await),
        Code::InvalidArgument,
        "raw size does not fit FP64"
    );
    assert_eq!(
        code(
            c.model_infer(raw_request("corrupt", &[fp32(vec![1, 1])]))
                .await
        ),
        Code::Unavailable
    );
    assert_eq!(
        code(
            c.model_infer(raw_request("matmul_dyn", &[fp32(vec![1, 4])]))
                .await
        ),
        Code::Internal
    );
    assert_eq!(
        code(
            c.model_infer(raw_request("dynamic2", &[fp32(vec![2, 1024])]))
                .await
        ),
        Code::ResourceExhausted
    );
    let mut both = raw_request("dynamic2", &[fp32(vec![1, 2])]);
    both.inputs[0].contents = Some(pb::InferTensorContents {
        fp32_contents: vec![1.0, 2.0],
        ..Default::default()
    });
    assert_eq!(code(c.model_infer(both).await), Code::InvalidArgument);
    let mut missing = raw_request("dynamic2", &[fp32(vec![1, 2])]);
    missing.raw_input_contents.clear();
    assert_eq!(code(c.model_infer(missing).await), Code::InvalidArgument);
    let mut version = raw_request("dynamic2", &[fp32(vec![1, 2])]);
    version.model_version = "7".into();
    assert_eq!(code(c.model_infer(version).await), Code::NotFound);

    // Parameters: priority as uint64 (tritonclient) or int64; out of range or of the wrong kind is invalid.
    let mut ok = raw_request("dynamic2", &[fp32(vec![1, 2])]);
    ok.id = "req-7".into();
    ok.parameters = HashMap::from([
        ("priority".into(), param_u64(1)),
        ("timeout".into(), param_u64(10_000_000)),
    ]);
    assert_eq!(
        c.model_infer(ok.clone()).await.unwrap().into_inner().id,
        "req-7"
    );
    ok.parameters.insert(
        "priority".into(),
        pb::InferParameter {
            parameter_choice: Some(pb::infer_parameter::ParameterChoice::Int64Param(1)),
        },
    );
    c.model_infer(ok.clone()).await.unwrap();
    ok.parameters.insert("priority".into(), param_u64(5));
    assert_eq!(code(c.model_infer(ok.clone()).await), Code::InvalidArgument);
    ok.parameters.insert(
        "priority".into(),
        pb::InferParameter {
            parameter_choice: Some(pb::infer_parameter::ParameterChoice::StringParam(
                "high".into(),
            )),
        },
    );
    let e = c.model_infer(ok.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("'priority'"), "{}", e.message());
    ok.parameters.insert(
        "priority".into(),
        pb::InferParameter {
            parameter_choice: Some(pb::infer_parameter::ParameterChoice::Int64Param(-1)),
        },
    );
    assert_eq!(code(c.model_infer(ok).await), Code::InvalidArgument);

    // Names that could leave the repository are refused before anything happens.
    for name in ["..", "../tests", "/etc", "a/b", ".hidden"] {
        let e = c
            .repository_model_load(pb::RepositoryModelLoadRequest {
                model_name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "load {name}");
        let e = c
            .repository_model_unload(pb::RepositoryModelUnloadRequest {
                model_name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "unload {name}");
        let e = c
            .model_config(pb::ModelConfigRequest {
                name: name.into(),
                version: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "config {name}");
    }
}

#[tokio::test]
async fn message_size_follows_the_body_limit() {
    let s = TestServer::start_with(&test_repo(), |c| c.http.max_body_bytes = 1024).await;
    let mut c = client(s.grpc).await;
    let t = Tensor {
        name: "x".into(),
        datatype: DataType::Fp32,
        shape: vec![1, 512],
        data: TensorData::Fixed(Bytes::from(vec![0u8; 2048])),
    };
    let e = c
        .model_infer(raw_request("dynamic2", &[t]))
        .await
        .unwrap_err();
    // tonic's own decoder refuses the message before it reaches the service;
    // the guard answers RESOURCE_EXHAUSTED with the flag to raise, as the spec asks.
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("--grpc-max-message-bytes"), "{e}");
}

#[tokio::test]
async fn queue_full_is_unavailable_and_a_passed_deadline_is_deadline_exceeded() {
    let repo = slow_repo();
    let s = TestServer::start(repo.path()).await;
    // Eight at once on a queue of one, one instance: some must be refused.
    let c = client(s.grpc).await;
    let calls = (0..8).map(|_| {
        let mut c = c.clone();
        let r = x_grpc("slow_q1", 1.0);
        async move { c.model_infer(r).await }
    });
    let results = futures::future::join_all(calls).await;
    let refused: Vec<&tonic::Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!refused.is_empty(), "no request was refused");
    for e in &refused {
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        assert!(e.message().contains("queue is full"), "{}", e.message());
        assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
    }
    assert!(results.iter().any(|r| r.is_ok()));

    // While the instance is busy (its request taken from the queue and
    // running), a 1 µs timeout passes in the queue.
    let mut a = c.clone();
    let busy = tokio::spawn(async move { a.model_infer(x_grpc("slow", 1.0)).await });
    let running = [("model", "slow")];
    eventually("the busy request to run", PATIENCE, || async {
        let text = s.metrics().await;
        metric(&text, "sluice_inflight_requests", &running) == 1.0
            && metric(&text, "sluice_pending_requests", &running) == 0.0
    })
    .await;
    let mut late = x_grpc("slow", 1.0);
    late.parameters.insert("timeout".into(), param_u64(1));
    let second = c.clone().model_infer(late).await;
    busy.await.unwrap().unwrap();
    let e = second.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
}

#[tokio::test]
async fn stream_infer_answers_every_request_and_reports_errors_in_band() {
    let s = TestServer::start(&test_repo()).await;
    let mut c = client(s.grpc).await;
    let mut requests = Vec::new();
    for i in 0..20 {
        let mut r = raw_request("dtype_int32", &[sample(DataType::Int32)]);
        r.id = format!("ok-{i}");
        requests.push(r);
    }
    let mut bad = raw_request("nope", &[sample(DataType::Int32)]);
    bad.id = "bad".into();
    requests.insert(7, bad);
    let expected = c
        .model_infer(raw_request("dtype_int32", &[sample(DataType::Int32)]))
        .await
        .unwrap()
        .into_inner();
    let (answered, errors) = crate::harness::grpc::stream(&mut c, requests).await;
    let mut ok = Vec::new();
    for resp in answered {
        assert_eq!(resp.raw_output_contents, expected.raw_output_contents);
        ok.push(resp.id);
    }
    ok.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("ok-{i}")).collect();
    want.sort();
    assert_eq!(ok, want);
    assert_eq!(errors, ["Request for unknown model: 'nope' is not found"]);
}
