//! A trailing slash on a REST path (`/v2/`, `/v2/models/m/`), as Triton's
//! and KServe's clients and gateways may send: the route without it answers,
//! behind the same scope (issue 14, item 6).

use crate::harness::{TestServer, test_repo};
use serde_json::{Value, json};

const INFER: &str = "infer-token-for-slashes-01";
const ADMIN: &str = "admin-token-for-slashes-01";

fn iris_body() -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
        "data": [5.1, 3.5, 1.4, 0.2]}]})
}

#[tokio::test]
async fn a_trailing_slash_reaches_the_route() {
    let s = TestServer::start(&test_repo()).await;
    let (status, meta) = s.get("/v2/").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["name"], "sluice");

    let (status, meta) = s.get("/v2/models/iris/").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["name"], "iris");

    let (status, out) = s.post_json("/v2/models/iris/infer/", &iris_body()).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["model_name"], "iris");
    assert_eq!(out["outputs"][0]["data"], json!([0]));

    let (status, out) = s
        .post_json(
            "/v1/models/iris:predict/",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(s.get("/v2/health/ready/").await.0, 200);
    assert_eq!(s.get("/v2/models/iris/versions/1/ready/").await.0, 200);

    // Errors stay what they are: an unknown path, an unknown model, a method
    // the route does not have.
    let (status, body) = s.get("/v2/nothing/here/").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("no such endpoint"))
    );
    let (status, body) = s.get("/v2/models/nope/").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("Request for unknown model: 'nope' is not found"))
    );
    assert_eq!(s.get("/v2/models/iris/infer/").await.0, 405);
    s.stop().await;
}

#[tokio::test]
async fn a_trailing_slash_keeps_the_scope_of_its_route() {
    let s = TestServer::spawn(&test_repo(), |c| {
        c.auth.infer_tokens = vec![INFER.parse().unwrap()];
        c.auth.admin_tokens = vec![ADMIN.parse().unwrap()];
        c.auth.protect_metrics = true;
    })
    .await;
    s.wait_ready().await;
    let post = |path: &'static str, token: Option<&'static str>| {
        let mut r = s.client.post(s.url(path)).body("{}");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    // Admin: the repository index with and without the slash, each scope.
    for path in ["/v2/repository/index", "/v2/repository/index/"] {
        assert_eq!(post(path, None).await, 401, "{path}");
        assert_eq!(post(path, Some(INFER)).await, 403, "{path}");
        assert_eq!(post(path, Some(ADMIN)).await, 200, "{path}");
    }
    // Infer: metadata needs a token, with the slash too.
    assert_eq!(s.get("/v2/models/iris/").await.0, 401);
    let r = s.client.get(s.url("/v2/models/iris/")).bearer_auth(INFER);
    assert_eq!(r.send().await.unwrap().status(), 200);
    // Metrics, protected: `/metrics/` is `/metrics`.
    assert_eq!(s.get("/metrics/").await.0, 401);
    let r = s.client.get(s.url("/metrics/")).bearer_auth(INFER);
    assert_eq!(r.send().await.unwrap().status(), 200);
    // Health stays open.
    assert_eq!(s.get("/v2/health/live/").await.0, 200);
    s.stop().await;
}
