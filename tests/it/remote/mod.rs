//! Model repositories in object storage, against real stores started here:
//! moto in server mode (PyPI), an S3-compatible server, and Azurite (npm),
//! Azure's own storage emulator. Both run on 127.0.0.1 from the tools that
//! `scripts/setup-stores.sh` installs; `make test` installs them and makes
//! these tests required (`SLUICE_STORES_REQUIRED=1`), while a plain
//! `cargo test` without them skips with a note.
//!
//! The same flow runs against both (see [`publish_and_swap`]). Publishing
//! is done as a user's CI would: with the store's own SDK (boto3,
//! azure-storage-blob) through `tests/stores/store.py`. Sluice runs as a
//! child process, configured from the environment exactly as in production
//! (`AWS_*`, `AZURE_STORAGE_USE_EMULATOR`). Between Sluice and the store
//! sits a [`Gate`], a TCP forwarder the test can shut: while shut, every
//! connection is closed before a byte passes, which is what a store that is
//! down looks like to a client, and the store keeps its objects for the
//! recovery.

mod bad_input;
mod flow;
mod gate;
mod store;
mod webdav;

use crate::harness::wait::{PATIENCE, eventually, until};
use gate::Gate;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use store::{Kind, StoreServer};

/// The tools, or `None` (with a note) when they are not installed and the
/// run does not require them.
fn tools() -> Option<store::Tools> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tools = store::Tools {
        python: root.join(".venv-stores/bin/python"),
        moto: root.join(".venv-stores/bin/moto_server"),
        wsgidav: root.join(".venv-stores/bin/wsgidav"),
        azurite: root.join(".tools-stores/node_modules/.bin/azurite-blob"),
        script: root.join("tests/stores/store.py"),
    };
    if [&tools.python, &tools.moto, &tools.wsgidav, &tools.azurite]
        .iter()
        .all(|p| p.is_file())
    {
        return Some(tools);
    }
    assert!(
        std::env::var_os("SLUICE_STORES_REQUIRED").is_none(),
        "the object stores are not installed: run scripts/setup-stores.sh"
    );
    eprintln!("remote: skipped: run scripts/setup-stores.sh to install moto and Azurite");
    None
}

/// The repository index of the Sluice at `base`.
async fn index(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let response = client
        .post(format!("{base}/v2/repository/index"))
        .json(&serde_json::json!({}))
        .send()
        .await;
    match response {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// A metric of the Sluice at `base`, summed over the series whose labels
/// include `labels`.
async fn metric(client: &reqwest::Client, base: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = match client.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    crate::harness::metrics::metric(&text, name, labels)
}

/// Two local repositories with a model in each and one in both: the one
/// in both is UNAVAILABLE with a reason naming both; the others serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_in_two_repositories_is_an_error_for_that_model_only() {
    use crate::harness::TestServer;
    use crate::harness::models::{add_model, swap_model};
    use sluice::repository::Location;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    add_model(a.path(), "only_a", &swap_model(1), None);
    add_model(b.path(), "only_b", &swap_model(2), None);
    add_model(a.path(), "both", &swap_model(3), None);
    add_model(b.path(), "both", &swap_model(4), None);
    let locations = vec![
        Location::Local(a.path().to_path_buf()),
        Location::Local(b.path().to_path_buf()),
    ];
    let s = TestServer::start_with(a.path(), |c| c.model_repositories = locations).await;
    for model in ["only_a", "only_b"] {
        assert_eq!(
            s.get(&format!("/v2/models/{model}/ready")).await.0,
            200,
            "{model}"
        );
    }
    let rows = index(&s.client, &s.base()).await;
    let both = rows
        .iter()
        .find(|r| r["name"] == "both")
        .expect("both is listed");
    let reason = both["reason"].as_str().unwrap_or_default();
    assert_eq!(both["state"], "UNAVAILABLE", "{both}");
    assert!(
        reason.contains("more than one model repository")
            && reason.contains(&a.path().display().to_string())
            && reason.contains(&b.path().display().to_string()),
        "{reason}"
    );
    let (status, body) = s.get("/v2/models/both/ready").await;
    assert_ne!(status, 200, "{body}");
}
