//! GPU providers up to the provider boundary, on a machine without a GPU:
//! the configured outcome (fail loudly, or fall back and say so) and the
//! placement report.

use crate::harness::models::Repo;
use crate::harness::{TestServer, test_repo};
use serde_json::json;

/// Copies of iris, each with its own `config.toml`.
fn repo(configs: &[(&str, &str)]) -> Repo {
    let iris = test_repo().join("iris/1/model.onnx");
    configs.iter().fold(Repo::new(), |repo, (name, config)| {
        repo.with(name, &iris, Some(config))
    })
}

#[tokio::test]
async fn missing_gpu_is_unavailable_or_a_logged_fallback_as_configured() {
    let dir = repo(&[
        (
            "cuda_strict",
            "[[execution_providers]]\nkind = \"cuda\"\ndevice_id = 0\n",
        ),
        (
            "trt_strict",
            "[[execution_providers]]\nkind = \"tensorrt\"\nfp16 = true\n",
        ),
        (
            "cuda_fallback",
            "fallback = true\n[[execution_providers]]\nkind = \"cuda\"\n[[execution_providers]]\nkind = \"cpu\"\n",
        ),
        ("cpu_only", ""),
    ]);
    let s = TestServer::start(dir.path()).await;
    let body = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});

    // fallback = false (the default): UNAVAILABLE, with the reason, never a silent CPU run.
    for model in ["cuda_strict", "trt_strict"] {
        let (status, out) = s
            .post_json(&format!("/v2/models/{model}/infer"), &body)
            .await;
        assert_eq!(status, 503, "{out}");
        let msg = out["error"].as_str().unwrap();
        assert!(
            msg.contains("execution provider") && msg.contains("is unavailable"),
            "{msg}"
        );
    }
    let (_, index) = s.post_json("/v2/repository/index", &json!({})).await;
    let strict = index
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "cuda_strict")
        .unwrap()
        .clone();
    assert_eq!(strict["state"], "UNAVAILABLE");
    assert!(
        strict["reason"].as_str().unwrap().contains("'cuda'"),
        "{strict}"
    );

    // fallback = true: serves on the CPU and reports the fallback.
    let (status, out) = s.post_json("/v2/models/cuda_fallback/infer", &body).await;
    assert_eq!(status, 200, "{out}");
    let (_, meta) = s.get("/v2/models/cuda_fallback").await;
    assert_eq!(meta["parameters"]["execution_provider"], "cpu");
    assert!(
        meta["parameters"]["execution_provider_fallbacks"]
            .as_str()
            .unwrap()
            .starts_with("cuda:"),
        "{meta}"
    );

    // The placement report, in metadata and as a metric label.
    let (_, meta) = s.get("/v2/models/cpu_only").await;
    assert_eq!(meta["parameters"]["execution_provider"], "cpu");
    let (_, text) = s.get("/metrics").await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains(
            "sluice_model_info{execution_provider=\"cpu\",model=\"cpu_only\",version=\"1\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("sluice_model_load_failures_total{model=\"cuda_strict\"} 1"));
    s.stop().await;
}
