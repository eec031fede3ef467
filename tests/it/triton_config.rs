//! The effective configuration as Triton's `ModelConfig` (REST JSON and
//! gRPC), and the repository `load` call with Triton's `config` override:
//! what `tritonclient`'s `get_model_config` and `load_model(config=...)`
//! rely on.

use crate::harness::TestServer;
use crate::harness::grpc::client;
use serde_json::{Value, json};
use sluice::grpc::pb;

/// A batch of `rows` iris-like rows of dynamic2's input (2 columns).
fn dyn_request(rows: usize) -> Value {
    json!({"inputs": [{
        "name": "x", "datatype": "FP32", "shape": [rows, 2],
        "data": vec![1.0f32; rows * 2],
    }]})
}

#[tokio::test]
async fn the_effective_config_says_what_config_pbtxt_said_on_both_protocols() {
    let repo = crate::pbtxt::repository();
    let server = TestServer::start(repo.path()).await;
    let (status, c) = server.get("/v2/models/iris_pb/config").await;
    assert_eq!(status, 200, "{c}");
    // Triton prints every scalar and list field, with proto field names.
    for field in [
        "name",
        "platform",
        "backend",
        "max_batch_size",
        "input",
        "output",
        "batch_input",
        "instance_group",
        "default_model_filename",
        "parameters",
        "model_warmup",
        "runtime",
    ] {
        assert!(c.get(field).is_some(), "{field} missing: {c}");
    }
    assert_eq!(c["name"], "iris_pb");
    assert_eq!(c["platform"], "onnxruntime_onnx");
    assert_eq!(c["default_model_filename"], "net.onnx");
    assert_eq!(c["max_batch_size"], 8);
    assert_eq!(c["version_policy"], json!({"specific": {"versions": [2]}}));
    let input = &c["input"][0];
    assert_eq!(input["name"], "input");
    assert_eq!(input["data_type"], "TYPE_FP32");
    assert_eq!(input["dims"], json!([2, 2]), "64-bit integers are numbers");
    assert_eq!(input["reshape"]["shape"], json!([4]));
    assert_eq!(input["format"], "FORMAT_NONE");
    let probabilities = c["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    assert_eq!(probabilities["label_filename"], "iris_labels.txt");
    assert_eq!(probabilities["dims"], json!([3]));
    let label = c["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap();
    assert_eq!(label["dims"], json!([1]));
    assert_eq!(label["reshape"]["shape"], json!([]));
    assert_eq!(c["instance_group"][0]["count"], 2);
    assert_eq!(c["instance_group"][0]["kind"], "KIND_CPU");
    let b = &c["dynamic_batching"];
    assert_eq!(b["preferred_batch_size"], json!([2, 4]));
    assert_eq!(b["max_queue_delay_microseconds"], 200);
    assert_eq!(b["preserve_ordering"], true);
    assert_eq!(b["priority_levels"], 2);
    assert_eq!(b["default_priority_level"], 2);
    assert_eq!(
        b["default_queue_policy"],
        json!({"timeout_action": "REJECT", "default_timeout_microseconds": 30000000, "allow_timeout_override": true, "max_queue_size": 64})
    );
    assert_eq!(b["priority_queue_policy"]["1"]["timeout_action"], "DELAY");
    assert_eq!(b["priority_queue_policy"]["1"]["max_queue_size"], 32);
    assert_eq!(c["optimization"]["graph"]["level"], 1);
    assert_eq!(
        c["parameters"]["intra_op_thread_count"]["string_value"],
        "1"
    );
    assert_eq!(
        c["parameters"]["inter_op_thread_count"]["string_value"],
        "1"
    );
    let warmups: Vec<(&str, u64)> = c["model_warmup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap(),
                w["batch_size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(warmups, [("zeros", 4), ("random", 8), ("sample", 1)]);
    assert_eq!(
        c["model_warmup"][2]["inputs"]["input"]["input_data_file"],
        "setosa.bin"
    );
    assert_eq!(c["response_cache"]["enable"], true);
    assert!(
        c.get("sequence_batching").is_none() && c.get("ensemble_scheduling").is_none(),
        "unset messages stay absent: {c}"
    );

    // gRPC answers the same message.
    let mut g = client(server.grpc).await;
    let config = g
        .model_config(pb::ModelConfigRequest {
            name: "iris_pb".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(config.max_batch_size, 8);
    assert_eq!(config.default_model_filename, "net.onnx");
    assert_eq!(config.input[0].reshape.as_ref().unwrap().shape, [4]);
    let Some(pb::model_config::SchedulingChoice::DynamicBatching(b)) = &config.scheduling_choice
    else {
        panic!("dynamic_batching missing: {config:?}")
    };
    assert_eq!(b.priority_levels, 2);
    assert_eq!(b.priority_queue_policy[&1].max_queue_size, 32);

    // A model with no configuration gets the completed one.
    let (_, plain) = server.get("/v2/models/plain/config").await;
    assert_eq!(plain["max_batch_size"], 32, "{plain}");
    assert_eq!(plain["input"][0]["dims"], json!([-1]), "{plain}");
    assert!(plain.get("dynamic_batching").is_some(), "{plain}");
    server.stop().await;
}

#[tokio::test]
async fn the_rendered_config_loads_back_as_the_same_config() {
    let repo = crate::pbtxt::repository();
    let server = TestServer::start(repo.path()).await;
    for model in ["iris_pb", "dyn_partial", "plain"] {
        let path = format!("/v2/models/{model}/config");
        let (_, before) = server.get(&path).await;
        let (status, out) = server
            .post_json(
                &format!("/v2/repository/models/{model}/load"),
                &json!({"parameters": {"config": before.to_string()}}),
            )
            .await;
        assert_eq!(status, 200, "{model}: {out}");
        let (_, after) = server.get(&path).await;
        assert_eq!(before, after, "{model}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_load_with_a_config_overrides_the_files_until_a_load_without_one() {
    let repo = crate::pbtxt::repository();
    let server = TestServer::start(repo.path()).await;
    let srv = &server;
    let load = |body: Value| async move {
        srv.post_json("/v2/repository/models/dyn_partial/load", &body)
            .await
    };
    let batch_limit = || async {
        let (_, c) = server.get("/v2/models/dyn_partial/config").await;
        c["max_batch_size"].as_u64().unwrap()
    };
    assert_eq!(batch_limit().await, 4, "config.pbtxt");

    // REST: Triton's clients send the JSON as a string.
    let (status, out) =
        load(json!({"parameters": {"config": r#"{"name": "dyn_partial", "max_batch_size": 2}"#}}))
            .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(batch_limit().await, 2);
    let (status, out) = server
        .post_json("/v2/models/dyn_partial/infer", &dyn_request(3))
        .await;
    assert_eq!(status, 400, "3 rows over max_batch_size 2: {out}");
    let (status, _) = server
        .post_json("/v2/models/dyn_partial/infer", &dyn_request(2))
        .await;
    assert_eq!(status, 200);

    // Bad overrides are the caller's error, name the parameter, and change nothing.
    for (config, says) in [
        (json!("not json"), "load parameter 'config'"),
        (json!(7), "must be a string holding a JSON ModelConfig"),
        (
            json!(r#"{"max_batch_size": 2, "no_such_field": 1}"#),
            "no_such_field",
        ),
        (
            json!(r#"{"name": "other"}"#),
            "must match the model's directory name",
        ),
        (
            json!(
                r#"{"output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [-1], "label_filename": "../../../etc/passwd"}]}"#
            ),
            "without '..'",
        ),
        (
            json!(r#"{"default_model_filename": "../iris_pb/1/net.onnx"}"#),
            "plain file name",
        ),
    ] {
        let (status, out) = load(json!({"parameters": {"config": config}})).await;
        assert_eq!(status, 400, "{config}: {out}");
        let error = out["error"].as_str().unwrap();
        assert!(error.contains(says), "{config}: {error}");
    }
    assert_eq!(
        batch_limit().await,
        2,
        "a refused override leaves the last one serving"
    );

    // gRPC: a string_param.
    let mut g = client(server.grpc).await;
    let mut parameters = std::collections::HashMap::new();
    parameters.insert(
        "config".to_string(),
        pb::ModelRepositoryParameter {
            parameter_choice: Some(
                pb::model_repository_parameter::ParameterChoice::StringParam(
                    r#"{"max_batch_size": 3}"#.into(),
                ),
            ),
        },
    );
    g.repository_model_load(pb::RepositoryModelLoadRequest {
        model_name: "dyn_partial".into(),
        parameters: parameters.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(batch_limit().await, 3);
    parameters.insert(
        "config".to_string(),
        pb::ModelRepositoryParameter {
            parameter_choice: Some(pb::model_repository_parameter::ParameterChoice::Int64Param(
                3,
            )),
        },
    );
    let e = g
        .repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: "dyn_partial".into(),
            parameters,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("Given: an int64_param"),
        "{}",
        e.message()
    );

    // A load without a config goes back to the files.
    let (status, _) = load(json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(batch_limit().await, 4);
    server.stop().await;
}
