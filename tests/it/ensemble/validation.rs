//! What an ensemble checks at load, each error naming the step; and its
//! readiness, which follows its composing models in whatever order they
//! load or leave.

use super::{PIPELINE, add_ensemble, fixture, json_body, json_outputs, matches, rows};
use crate::harness::TestServer;
use crate::harness::models::Repo;
use crate::harness::wait::{PATIENCE, until};
use serde_json::{Value, json};

/// An ensemble of `steps` over RAW (FP32 [4]) giving `outputs`.
fn ensemble(outputs: &str, steps: &str) -> String {
    format!(
        r#"
platform: "ensemble"
max_batch_size: 8
input [ {{ name: "RAW", data_type: TYPE_FP32, dims: [ 4 ] }} ]
output [ {outputs} ]
ensemble_scheduling {{ step [ {steps} ] }}
"#
    )
}

const OUT: &str = r#"{ name: "OUT", data_type: TYPE_FP32, dims: [ 4 ] }"#;

fn step(model: &str, input: (&str, &str), output: (&str, &str)) -> String {
    format!(
        r#"{{ model_name: "{model}", model_version: -1, input_map {{ key: "{}" value: "{}" }}, output_map {{ key: "{}" value: "{}" }} }}"#,
        input.0, input.1, output.0, output.1
    )
}

/// The index row of `name` (state, reason).
async fn index_row(s: &TestServer, name: &str) -> (String, String) {
    let (status, index) = s.post_json("/v2/repository/index", &json!({})).await;
    assert_eq!(status, 200, "{index}");
    let row: &Value = index
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {index}"));
    (
        row["state"].as_str().unwrap().to_string(),
        row["reason"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn load_time_errors_name_the_step() {
    let repo = Repo::new().with("pre", &fixture("pre"), None).with(
        "lookup",
        &crate::harness::fixture("lookup.onnx"),
        None,
    );
    let pre = |i: &str, o: &str| step("pre", ("x", i), ("y", o));
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "e_unknown",
            ensemble(
                OUT,
                &[pre("RAW", "A"), step("nope", ("x", "A"), ("y", "OUT"))].join(","),
            ),
            &[
                "ensemble_scheduling.step[1] (model 'nope')",
                "not in the model repository",
            ],
        ),
        (
            "e_type",
            ensemble(
                r#"{ name: "OUT", data_type: TYPE_FP32, dims: [ 1 ] }"#,
                &[pre("RAW", "A"), step("lookup", ("i", "A"), ("y", "OUT"))].join(","),
            ),
            &[
                "ensemble_scheduling.step[1] (model 'lookup')",
                "input 'i' expects INT64",
                "is FP32",
            ],
        ),
        (
            "e_shape",
            ensemble(
                r#"{ name: "OUT", data_type: TYPE_FP32, dims: [ 3 ] }"#,
                &pre("RAW", "OUT"),
            ),
            &[
                "ensemble output 'OUT' is declared FP32 [-1, 3]",
                "output 'y' of step[0]",
            ],
        ),
        (
            "e_cycle",
            ensemble(
                OUT,
                &[
                    pre("RAW", "A"),
                    pre("C", "B"),
                    pre("B", "C"),
                    pre("C", "OUT"),
                ]
                .join(","),
            ),
            &[
                "ensemble_scheduling.step[1] (model 'pre')",
                "step[2] (model 'pre')",
                "form a cycle",
            ],
        ),
        (
            "e_unmapped_output",
            ensemble(
                &format!(r#"{OUT}, {{ name: "EXTRA", data_type: TYPE_FP32, dims: [ 4 ] }}"#),
                &pre("RAW", "OUT"),
            ),
            &["ensemble output 'EXTRA' is not produced by any step"],
        ),
        (
            "e_twice",
            ensemble(OUT, &[pre("RAW", "OUT"), pre("RAW", "OUT")].join(",")),
            &[
                "ensemble_scheduling.step[1] (model 'pre')",
                "ensemble_scheduling.step[0] (model 'pre') produces too",
            ],
        ),
        (
            "e_no_producer",
            ensemble(OUT, &pre("MISSING", "OUT")),
            &[
                "ensemble_scheduling.step[0] (model 'pre')",
                "'MISSING', which no step produces",
            ],
        ),
        (
            "e_bad_key",
            ensemble(OUT, &step("pre", ("nope", "RAW"), ("y", "OUT"))),
            &[
                "ensemble_scheduling.step[0] (model 'pre')",
                "`input_map` key 'nope' is not an input of model 'pre'",
            ],
        ),
        (
            "e_nested",
            ensemble(OUT, &step("e_bad_key", ("RAW", "RAW"), ("OUT", "OUT"))),
            &[
                "ensemble_scheduling.step[0] (model 'e_bad_key')",
                "is an ensemble; ensembles cannot be nested",
            ],
        ),
        (
            "e_bad_output_key",
            ensemble(OUT, &step("pre", ("x", "RAW"), ("z", "OUT"))),
            &[
                "ensemble_scheduling.step[0] (model 'pre')",
                "`output_map` key 'z' is not an output",
            ],
        ),
    ];
    for (name, config, _) in &cases {
        add_ensemble(repo.path(), name, config);
    }
    let s = TestServer::start(repo.path()).await;
    for (name, _, needles) in &cases {
        let (state, reason) = index_row(&s, name).await;
        assert_eq!(state, "UNAVAILABLE", "{name}: {reason}");
        for needle in *needles {
            assert!(
                reason.contains(needle),
                "{name}: {needle:?} not in {reason:?}"
            );
        }
        // The load API gives the same reason; inference is refused.
        let (status, out) = s
            .post_json(&format!("/v2/repository/models/{name}/load"), &json!({}))
            .await;
        assert_ne!(status, 200, "{name}: {out}");
        assert!(
            out["error"].as_str().unwrap().contains(needles[0]),
            "{name}: {out}"
        );
        let (status, _) = s
            .post_json(&format!("/v2/models/{name}/infer"), &json_body(&rows(1, 0)))
            .await;
        assert_ne!(status, 200, "{name}");
    }
    s.stop().await;
}

#[tokio::test]
async fn an_ensemble_is_ready_exactly_while_its_composing_models_are() {
    // Only the ensemble loads at start; its models come later by load calls.
    let repo = Repo::new()
        .with("pre", &fixture("pre"), None)
        .with("net", &fixture("net_v1"), None)
        .with("post", &fixture("post"), None);
    add_ensemble(repo.path(), "pipeline", super::PIPELINE);
    let s = TestServer::start_with(repo.path(), |c| {
        c.load_models = vec!["pipeline".into()];
    })
    .await;
    let (state, reason) = index_row(&s, "pipeline").await;
    assert_eq!(state, "UNAVAILABLE");
    assert!(
        reason.contains("ensemble_scheduling.step[0] (model 'post')")
            && reason.contains("model 'post' is not loaded"),
        "{reason}"
    );
    let (status, ready) = s.get("/v2/models/pipeline/ready").await;
    assert_ne!(status, 200, "{ready}");
    let gauge = |state| [("model", "pipeline"), ("state", state)];
    assert_eq!(
        s.metric("sluice_model_state", &gauge("unavailable")).await,
        1.0
    );
    assert_eq!(s.metric("sluice_model_state", &gauge("ready")).await, 0.0);
    let (status, out) = s
        .post_json("/v2/models/pipeline/infer", &json_body(&rows(1, 0)))
        .await;
    assert_eq!(status, 503, "{out}");
    assert!(
        out["error"].as_str().unwrap().contains("model 'post'"),
        "{out}"
    );

    for (model, next) in [("post", Some("pre")), ("pre", Some("net")), ("net", None)] {
        let (status, out) = s
            .post_json(&format!("/v2/repository/models/{model}/load"), &json!({}))
            .await;
        assert_eq!(status, 200, "{model}: {out}");
        let (state, reason) = index_row(&s, "pipeline").await;
        match next {
            Some(missing) => {
                assert_eq!(state, "UNAVAILABLE");
                assert!(reason.contains(&format!("(model '{missing}')")), "{reason}");
            }
            None => assert_eq!(state, "READY", "{reason}"),
        }
    }
    let (status, ready) = s.get("/v2/models/pipeline/ready").await;
    assert_eq!((status, &ready["ready"]), (200, &json!(true)));
    assert_eq!(s.metric("sluice_model_state", &gauge("ready")).await, 1.0);
    let x = rows(2, 3);
    let (status, out) = s
        .post_json("/v2/models/pipeline/infer", &json_body(&x))
        .await;
    assert_eq!(status, 200, "{out}");
    matches(&json_outputs(&out), &x, 1.0).unwrap();

    // Unloading a composing model takes the ensemble down, naming it.
    let (status, out) = s
        .post_json("/v2/repository/models/net/unload", &json!({}))
        .await;
    assert_eq!(status, 200, "{out}");
    let reason = until("the ensemble to follow net's unload", PATIENCE, || async {
        let (state, reason) = index_row(&s, "pipeline").await;
        (state == "UNAVAILABLE").then_some(reason)
    })
    .await;
    assert!(
        reason.contains("ensemble_scheduling.step[2] (model 'net')"),
        "{reason}"
    );
    let (status, _) = s.get("/v2/models/pipeline/ready").await;
    assert_ne!(status, 200);
    assert_eq!(
        s.metric("sluice_model_state", &gauge("unavailable")).await,
        1.0
    );
    s.stop().await;
}

#[tokio::test]
async fn a_startup_scan_in_any_order_ends_ready_even_with_exit_on_error_and_strict_readiness_follows()
 {
    // "a_pipeline" sorts before its models, so it loads first.
    let repo = Repo::new()
        .with("pre", &fixture("pre"), None)
        .with("net", &fixture("net_v1"), None)
        .with("post", &fixture("post"), None);
    add_ensemble(
        repo.path(),
        "a_pipeline",
        &PIPELINE.replace("\"pipeline\"", "\"a_pipeline\""),
    );
    // With --exit-on-error too: the ensemble's own load, before its models,
    // is not a start-up failure once they have loaded.
    let s = TestServer::start_with(repo.path(), |c| {
        c.strict_readiness = true;
        c.exit_on_error = true;
    })
    .await;
    let (state, reason) = index_row(&s, "a_pipeline").await;
    assert_eq!(state, "READY", "{reason}");
    let x = rows(1, 4);
    let (status, out) = s
        .post_json("/v2/models/a_pipeline/infer", &json_body(&x))
        .await;
    assert_eq!(status, 200, "{out}");
    matches(&json_outputs(&out), &x, 1.0).unwrap();
    // Without its middle model the server is not ready (strict readiness).
    let (status, _) = s
        .post_json("/v2/repository/models/net/unload", &json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, why) = s.get("/v2/health/ready").await;
    assert_ne!(status, 200);
    assert!(why.to_string().contains("a_pipeline"), "{why}");
    s.stop().await;
}
