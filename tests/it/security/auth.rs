//! Bearer tokens and their scopes on REST and gRPC.

use super::{IRIS, error_of, iris_request, post};
use crate::harness::TestServer;
use crate::harness::grpc::client;
use crate::harness::test_repo;
use crate::harness::wait::{PATIENCE, eventually};
use sluice::grpc::pb;
use tonic::Code;

const INFER: &str = "infer-token-for-tests-0001";
const ADMIN: &str = "admin-token-for-tests-0001";

fn with_tokens(c: &mut sluice::ServerConfig) {
    c.auth.infer_tokens = vec![INFER.parse().unwrap()];
    c.auth.admin_tokens = vec![ADMIN.parse().unwrap()];
}

#[tokio::test]
async fn rest_tokens_and_scopes() {
    let s = TestServer::start_with(&test_repo(), with_tokens).await;
    // Health and metrics stay open.
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
    assert_eq!(s.get("/metrics").await.0, 200);

    let r = post(&s, "/v2/models/iris/infer", None, IRIS).await;
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"sluice\"",
        "401 names the scheme"
    );
    let (status, error) = error_of(r).await;
    assert_eq!(status, 401);
    assert!(error.contains("authentication required"), "{error}");
    for bad in ["not-a-token-at-all-000", "", INFER.trim_end_matches('1')] {
        let (status, error) =
            error_of(post(&s, "/v2/models/iris/infer", Some(bad), IRIS).await).await;
        assert_eq!(status, 401, "{bad}");
        // No detail about which tokens exist.
        assert!(
            !error.contains(INFER) && !error.contains(bad) || bad.is_empty(),
            "{error}"
        );
    }
    assert_eq!(
        post(&s, "/v2/models/iris/infer", Some(INFER), IRIS)
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&s, "/v2/models/iris/infer", Some(ADMIN), IRIS)
            .await
            .status(),
        200
    );
    let r = s
        .client
        .get(s.url("/v2/models/iris"))
        .bearer_auth(INFER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "metadata needs infer");

    // The repository API needs admin.
    let (status, error) = error_of(post(&s, "/v2/repository/index", Some(INFER), "{}").await).await;
    assert_eq!(status, 403);
    assert!(error.contains("'admin' scope"), "{error}");
    assert_eq!(
        post(&s, "/v2/repository/index", Some(ADMIN), "{}")
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&s, "/v2/repository/index", None, "{}").await.status(),
        401
    );
    eprintln!("security: rest auth: 12 requests, 0 unexpected");
}

#[tokio::test]
async fn protected_health_and_metrics_need_a_token() {
    let repo = test_repo();
    let s = TestServer::spawn(&repo, |c| {
        with_tokens(c);
        c.auth.protect_health = true;
        c.auth.protect_metrics = true;
    })
    .await;
    eventually("ready, asked with a token", PATIENCE, || async {
        let r = s
            .client
            .get(s.url("/v2/health/ready"))
            .bearer_auth(INFER)
            .send()
            .await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(s.get("/v2/health/live").await.0, 401);
    assert_eq!(s.get("/metrics").await.0, 401);
    let r = s
        .client
        .get(s.url("/metrics"))
        .bearer_auth(INFER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut c = client(s.grpc).await;
    let e = c.server_ready(pb::ServerReadyRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}

fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test]
async fn grpc_tokens_and_scopes() {
    let s = TestServer::start_with(&test_repo(), with_tokens).await;
    let mut c = client(s.grpc).await;
    // Health is open, inference is not.
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    let e = c.model_infer(iris_request()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let e = c
        .model_infer(with_bearer(iris_request(), "wrong-token-000000000"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    c.model_infer(with_bearer(iris_request(), INFER))
        .await
        .unwrap();
    let index = pb::RepositoryIndexRequest::default();
    let e = c
        .repository_index(with_bearer(index.clone(), INFER))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    c.repository_index(with_bearer(index, ADMIN)).await.unwrap();
    // A stream needs the token too.
    let e = c
        .model_stream_infer(futures::stream::iter(vec![iris_request()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
}

#[tokio::test]
async fn log_settings_are_admin_only_and_change_on_both_protocols() {
    let s = TestServer::start_with(&test_repo(), with_tokens).await;
    let get = |token: &'static str| s.client.get(s.url("/v2/logging")).bearer_auth(token).send();
    assert_eq!(get(INFER).await.unwrap().status(), 403);
    let settings: serde_json::Value = get(ADMIN).await.unwrap().json().await.unwrap();
    assert_eq!(settings["log_info"], true);
    assert_eq!(settings["log_verbose_level"], 0);

    let r = post(
        &s,
        "/v2/logging",
        Some(ADMIN),
        r#"{"log_verbose_level": 1}"#,
    )
    .await;
    assert_eq!(r.status(), 200);
    let settings: serde_json::Value = r.json().await.unwrap();
    assert_eq!(settings["log_verbose_level"], 1);
    assert_eq!(settings["log_filter"], "debug,ort=warn");
    let (status, error) =
        error_of(post(&s, "/v2/logging", Some(ADMIN), r#"{"log_info": "yes"}"#).await).await;
    assert_eq!(status, 400);
    assert!(error.contains("'log_info' must be a boolean"), "{error}");

    // gRPC LogSettings, as tritonclient's get/update_log_settings send it.
    use pb::log_settings_request::{SettingValue, setting_value::ParameterChoice};
    let mut c = client(s.grpc).await;
    let e = c
        .log_settings(with_bearer(pb::LogSettingsRequest::default(), INFER))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let change = pb::LogSettingsRequest {
        settings: [(
            "log_verbose_level".to_string(),
            SettingValue {
                parameter_choice: Some(ParameterChoice::Uint32Param(0)),
            },
        )]
        .into(),
    };
    let got = c
        .log_settings(with_bearer(change, ADMIN))
        .await
        .unwrap()
        .into_inner();
    let level = &got.settings["log_verbose_level"];
    assert_eq!(
        level.parameter_choice,
        Some(pb::log_settings_response::setting_value::ParameterChoice::Uint32Param(0))
    );
}
