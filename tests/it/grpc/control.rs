//! The gRPC control plane: metadata, config, statistics, the repository
//! index, load and unload, health and reflection.

use super::*;
use crate::harness::wait::{PATIENCE, eventually};

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
    assert_eq!(
        b.priority_levels, 0,
        "one level is reported as Triton does: priorities off"
    );
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
    let health = HealthClient::new(channel.clone());
    // Health follows readiness, polled by the server: wait for it to catch up.
    for service in ["", "inference.GRPCInferenceService"] {
        let health = &health;
        eventually(format!("{service:?} to be SERVING"), PATIENCE, || {
            let mut health = health.clone();
            async move {
                let r = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                r.status() == ServingStatus::Serving
            }
        })
        .await;
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
