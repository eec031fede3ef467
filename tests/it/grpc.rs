//! gRPC: every RPC of `inference.GRPCInferenceService` through a tonic client
//! generated from the same protos, every dtype against ONNX Runtime's own
//! results, every error code, streaming, health and reflection.

use crate::harness::{TestServer, fixture, raw_run, test_repo};
use bytes::Bytes;
use half::{bf16, f16};
use sluice::grpc::pb::{self, grpc_inference_service_client::GrpcInferenceServiceClient};
use sluice::tensor::encode_raw;
use sluice::tensor::{DataType, Tensor, TensorData};
use std::collections::HashMap;
use std::net::SocketAddr;
use tonic::Code;
use tonic::transport::Channel;

pub type Client = GrpcInferenceServiceClient<Channel>;

pub async fn client(addr: SocketAddr) -> Client {
    GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX)
}

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

/// A `ModelInferRequest` carrying `inputs` in `raw_input_contents`.
pub fn raw_request(model: &str, inputs: &[Tensor]) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: inputs
            .iter()
            .map(|t| pb::model_infer_request::InferInputTensor {
                name: t.name.clone(),
                datatype: t.datatype.as_str().into(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: inputs.iter().map(|t| encode_raw(&t.data)).collect(),
        ..Default::default()
    }
}

fn param_u64(v: u64) -> pb::InferParameter {
    pb::InferParameter {
        parameter_choice: Some(pb::infer_parameter::ParameterChoice::Uint64Param(v)),
    }
}

fn model_path(name: &str) -> std::path::PathBuf {
    test_repo().join(name).join("1/model.onnx")
}

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
async fn metadata_config_statistics_index_health_and_reflection() {
    let s = TestServer::start(&test_repo()).await;
    let mut c = client(s.grpc).await;
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = |name: &str, version: &str| pb::ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        c.model_ready(ready("iris", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        c.model_ready(ready("iris", "1"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !c.model_ready(ready("nope", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !c.model_ready(ready("corrupt", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert_eq!(
        c.model_ready(ready("iris", "x")).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let meta = c
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "sluice");
    assert!(meta.extensions.contains(&"binary_tensor_data".to_string()));

    let meta = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.versions, ["1"]);
    assert_eq!(meta.platform, "onnxruntime_onnx");
    assert_eq!(meta.inputs[0].name, "input");
    assert_eq!(meta.inputs[0].shape, [-1, 4]);
    assert_eq!(meta.outputs.len(), 2);

    let config = c
        .model_config(pb::ModelConfigRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(config.name, "iris");
    assert_eq!(config.platform, "onnxruntime_onnx");
    assert_eq!(config.backend, "onnxruntime");
    assert_eq!(config.max_batch_size, 32);
    assert_eq!(config.input[0].dims, [4], "batch dim excluded");
    assert_eq!(config.input[0].data_type(), pb::DataType::TypeFp32);
    assert_eq!(config.output[0].data_type(), pb::DataType::TypeInt64);
    assert_eq!(
        config.instance_group[0].kind(),
        pb::model_instance_group::Kind::Cpu
    );
    assert!(config.instance_group[0].count >= 1);
    let Some(pb::model_config::SchedulingChoice::DynamicBatching(b)) = config.scheduling_choice
    else {
        panic!("dynamic_batching missing")
    };
    assert_eq!(b.priority_levels, 1);
    assert!(b.default_queue_policy.unwrap().max_queue_size > 0);
    let fixed = c
        .model_config(pb::ModelConfigRequest {
            name: "fixed".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(fixed.max_batch_size, 0);
    assert_eq!(fixed.input[0].dims, [2, 3], "no batch dim to exclude");

    // Statistics count a request.
    let input = Tensor {
        name: "input".into(),
        datatype: DataType::Fp32,
        shape: vec![1, 4],
        data: TensorData::Fixed(Bytes::from(
            [5.1f32, 3.5, 1.4, 0.2].map(f32::to_le_bytes).concat(),
        )),
    };
    c.model_infer(raw_request("iris", &[input])).await.unwrap();
    let stats = c
        .model_statistics(pb::ModelStatisticsRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.model_stats.len(), 1);
    let st = &stats.model_stats[0];
    assert_eq!(
        st.inference_stats
            .as_ref()
            .unwrap()
            .success
            .as_ref()
            .unwrap()
            .count,
        1
    );
    assert_eq!(st.inference_count, 1);
    let all = c
        .model_statistics(pb::ModelStatisticsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.model_stats.len() > 10, "every served version");
    assert_eq!(
        c.model_statistics(pb::ModelStatisticsRequest {
            name: "nope".into(),
            version: String::new()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );

    let index = c
        .repository_index(pb::RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner();
    let corrupt = index.models.iter().find(|m| m.name == "corrupt").unwrap();
    assert_eq!(corrupt.state, "UNAVAILABLE");
    assert!(!corrupt.reason.is_empty());
    let iris = index.models.iter().find(|m| m.name == "iris").unwrap();
    assert_eq!((iris.version.as_str(), iris.state.as_str()), ("1", "READY"));
    let ready_only = c
        .repository_index(pb::RepositoryIndexRequest {
            ready: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ready_only.models.iter().all(|m| m.state == "READY"));
    assert!(!ready_only.models.iter().any(|m| m.name == "corrupt"));

    // grpc.health.v1
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let channel = Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    // Health follows readiness, polled by the server: wait for it to catch up.
    for service in ["", "inference.GRPCInferenceService"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let r = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            if r.status() == ServingStatus::Serving {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{service:?} not SERVING within 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    // Server reflection lists the inference service.
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("no list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"inference.GRPCInferenceService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
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

/// A repository with `slow.onnx` as two models: `slow` (one instance) and
/// `slow_q1` (one instance, a queue of one).
pub fn slow_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in [
        ("slow", "instances = 1\n"),
        (
            "slow_q1",
            "instances = 1\n[dynamic_batching]\nmax_queue_size = 1\n",
        ),
    ] {
        std::fs::create_dir_all(dir.path().join(name).join("1")).unwrap();
        std::fs::copy(
            fixture("slow.onnx"),
            dir.path().join(name).join("1/model.onnx"),
        )
        .unwrap();
        std::fs::write(dir.path().join(name).join("config.toml"), config).unwrap();
    }
    dir
}

#[tokio::test]
async fn queue_full_is_unavailable_and_a_passed_deadline_is_deadline_exceeded() {
    let repo = slow_repo();
    let s = TestServer::start(repo.path()).await;
    let one = |model: &str| {
        raw_request(
            model,
            &[Tensor {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![1, 1],
                data: TensorData::Fixed(Bytes::from(1f32.to_le_bytes().to_vec())),
            }],
        )
    };
    // Eight at once on a queue of one, one instance: some must be refused.
    let c = client(s.grpc).await;
    let calls = (0..8).map(|_| {
        let mut c = c.clone();
        let r = one("slow_q1");
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

    // While the instance is busy, a 1 µs timeout passes in the queue.
    let (mut a, mut b) = (c.clone(), c.clone());
    let mut late = one("slow");
    late.parameters.insert("timeout".into(), param_u64(1));
    let busy = one("slow");
    let (first, second) = tokio::join!(a.model_infer(busy), async { b.model_infer(late).await });
    first.unwrap();
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
    let mut responses = c
        .model_stream_infer(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    while let Some(r) = responses.message().await.unwrap() {
        match r.infer_response {
            Some(resp) if r.error_message.is_empty() => {
                assert_eq!(resp.raw_output_contents, expected.raw_output_contents);
                ok.push(resp.id);
            }
            _ => errors.push(r.error_message),
        }
    }
    ok.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("ok-{i}")).collect();
    want.sort();
    assert_eq!(ok, want);
    assert_eq!(errors, ["unknown model 'nope'"]);
}

#[tokio::test]
async fn repository_unload_and_load_over_grpc() {
    let s = TestServer::start(&test_repo()).await;
    let mut c = client(s.grpc).await;
    let ready = |name: &str| pb::ModelReadyRequest {
        name: name.into(),
        version: String::new(),
    };
    c.repository_model_unload(pb::RepositoryModelUnloadRequest {
        model_name: "fixed".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        !c.model_ready(ready("fixed"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let t = Tensor {
        name: "x".into(),
        datatype: DataType::Fp32,
        shape: vec![2, 3],
        data: TensorData::Fixed(Bytes::from(vec![0u8; 24])),
    };
    assert_eq!(
        c.model_infer(raw_request("fixed", std::slice::from_ref(&t)))
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
    c.repository_model_load(pb::RepositoryModelLoadRequest {
        model_name: "fixed".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        c.model_ready(ready("fixed"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    c.model_infer(raw_request("fixed", &[t])).await.unwrap();
    // Loading a loaded model reloads it; a model not on disk is NOT_FOUND.
    c.repository_model_load(pb::RepositoryModelLoadRequest {
        model_name: "fixed".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let e = c
        .repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: "absent".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: "corrupt".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
}
