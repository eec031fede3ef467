//! A model whose run fails for some inputs: only those requests fail.

use super::*;

/// `lookup`: y = 10 i + 0.5 for i in -16..=15; any other i fails the run
/// inside ONNX Runtime (Gather out of bounds). One instance and a 3 ms queue
/// delay, so bad requests are batched with good ones.
const LOOKUP_CONFIG: &str = "instances = 1\n[dynamic_batching]\nmax_queue_delay_us = 3000\n";

fn lookup_expect(i: i64) -> f32 {
    let k = if i < 0 { i + 16 } else { i };
    10.0 * k as f32 + 0.5
}

/// A `lookup` request over HTTP: `indices` as one row each.
async fn lookup_http(client: &reqwest::Client, base: &str, indices: &[i64]) -> (u16, Value) {
    let body = json!({"inputs": [{"name": "i", "shape": [indices.len(), 1], "datatype": "INT64", "data": indices}]});
    match client
        .post(format!("{base}/v2/models/lookup/infer"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

fn lookup_grpc(indices: &[i64]) -> sluice::grpc::pb::ModelInferRequest {
    let data: Vec<u8> = indices.iter().flat_map(|i| i.to_le_bytes()).collect();
    raw_request(
        "lookup",
        &[Tensor {
            name: "i".into(),
            datatype: DataType::Int64,
            shape: vec![indices.len(), 1],
            data: TensorData::Fixed(Bytes::from(data)),
        }],
    )
}

/// Checks an HTTP lookup answer; `bad` requests must get 500 with ONNX
/// Runtime's reason, good ones exactly their rows.
fn check_lookup_http(tally: &Tally, indices: &[i64], bad: bool, status: u16, out: &Value) {
    if status == 0 {
        tally.lost(format!("lookup {indices:?}: {out}"));
    } else if bad {
        let error = out["error"].as_str().unwrap_or_default();
        if status == 500 && error.contains("out of data bounds") {
            tally.expected_errors.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.wrong(format!("bad lookup {indices:?}: {status} {out}"));
        }
    } else {
        let want: Vec<f64> = indices
            .iter()
            .map(|&i| f64::from(lookup_expect(i)))
            .collect();
        let got: Option<Vec<f64>> = out["outputs"][0]["data"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect());
        if status == 200 && got.as_ref() == Some(&want) {
            tally.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.wrong(format!("good lookup {indices:?}: {status} {out}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_for_some_inputs_fails_only_those_requests() {
    const PER_CLIENT: u64 = 60;
    let repo = Repo::new()
        .with("lookup", &fixture("lookup.onnx"), Some(LOOKUP_CONFIG))
        .with("other", &swap_model(1), None);
    let s = TestServer::start(repo.path()).await;
    let base = s.base();
    let tally = Arc::new(Tally::default());
    let mut load = Load::default();

    // Four HTTP clients with good requests of 1..3 rows.
    for c in 0..4i64 {
        let (tally, base, client) = (tally.clone(), base.clone(), http_client());
        load.tasks.push(tokio::spawn(async move {
            for k in 0..PER_CLIENT as i64 {
                let rows = 1 + (k % 3);
                let indices: Vec<i64> = (0..rows).map(|j| (c * 7 + k + j) % 32 - 16).collect();
                tally.sent.fetch_add(1, Ordering::Relaxed);
                let (status, out) = lookup_http(&client, &base, &indices).await;
                check_lookup_http(&tally, &indices, false, status, &out);
            }
        }));
    }
    // Two HTTP clients alternating bad and good requests (a bad request may
    // carry good rows too: the whole request fails, alone).
    for c in 0..2i64 {
        let (tally, base, client) = (tally.clone(), base.clone(), http_client());
        load.tasks.push(tokio::spawn(async move {
            for k in 0..PER_CLIENT as i64 {
                let bad = k % 2 == 0;
                let indices: Vec<i64> = if bad {
                    if k % 4 == 0 {
                        vec![16 + k + c]
                    } else {
                        vec![3, -17 - k]
                    }
                } else {
                    vec![(k + c) % 16]
                };
                tally.sent.fetch_add(1, Ordering::Relaxed);
                let (status, out) = lookup_http(&client, &base, &indices).await;
                check_lookup_http(&tally, &indices, bad, status, &out);
            }
        }));
    }
    // One gRPC client, every third request bad: INTERNAL.
    {
        let (tally, mut client) = (tally.clone(), grpc_client(s.grpc).await);
        load.tasks.push(tokio::spawn(async move {
            for k in 0..PER_CLIENT as i64 {
                let bad = k % 3 == 0;
                let indices = if bad {
                    vec![1000 + k]
                } else {
                    vec![k % 16, -1]
                };
                tally.sent.fetch_add(1, Ordering::Relaxed);
                let answer =
                    tokio::time::timeout(REQUEST_LIMIT, client.model_infer(lookup_grpc(&indices)))
                        .await;
                match answer {
                    Err(_) => tally.lost(format!("grpc lookup {indices:?}: no answer")),
                    Ok(Err(st))
                        if bad
                            && st.code() == Code::Internal
                            && st.message().contains("out of data bounds") =>
                    {
                        tally.expected_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(r)) if !bad => {
                        let r = r.into_inner();
                        let want: Vec<f32> = indices.iter().map(|&i| lookup_expect(i)).collect();
                        if r.raw_output_contents.first().map(|b| fp32_rows(b)) == Some(want) {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tally.wrong(format!("grpc lookup {indices:?}: {r:?}"));
                        }
                    }
                    Ok(other) => {
                        tally.wrong(format!("grpc lookup {indices:?} (bad: {bad}): {other:?}"))
                    }
                }
            }
        }));
    }
    // Two HTTP clients on another model.
    swap_clients(&mut load, &tally, &base, "other", 2, &[1]);
    let other_stop = load.stop.clone();

    // The lookup clients send a fixed number of requests; then stop the rest.
    let (other, lookups): (Vec<_>, Vec<_>) = {
        let mut tasks = std::mem::take(&mut load.tasks);
        let other = tasks.split_off(7);
        (other, tasks)
    };
    for t in lookups {
        t.await.unwrap();
    }
    more_ok(&tally, 10).await;
    other_stop.store(true, Ordering::Relaxed);
    for t in other {
        t.await.unwrap();
    }

    // The model keeps serving, over both protocols.
    let client = http_client();
    for i in [0, 5, 15, -16] {
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let (status, out) = lookup_http(&client, &base, &[i]).await;
        check_lookup_http(&tally, &[i], false, status, &out);
    }
    let r = grpc_client(s.grpc)
        .await
        .model_infer(lookup_grpc(&[7]))
        .await
        .unwrap()
        .into_inner();
    tally.sent.fetch_add(1, Ordering::Relaxed);
    assert_eq!(fp32_rows(&r.raw_output_contents[0]), vec![70.5]);
    tally.ok.fetch_add(1, Ordering::Relaxed);

    let executions = s
        .metric("sluice_executions_total", &[("model", "lookup")])
        .await;
    // Good lookups: 4 clients x 60, half of 2 x 60, two thirds of 60, 5 after.
    let good = 4 * PER_CLIENT + PER_CLIENT + PER_CLIENT * 2 / 3 + 5;
    tally.finish(
        "run_fails_for_some_inputs",
        &format!("{good} good lookups answered by {executions} successful runs"),
    );
    // Requests were batched (so bad ones shared batches with good ones).
    assert!(executions < good as f64, "no batching: {executions} runs");
    // The statistics count exactly the expected failures.
    let (_, stats) = s.get("/v2/models/lookup/stats").await;
    let fails = stats["model_stats"][0]["inference_stats"]["fail"]["count"].as_u64();
    let expected = tally.expected_errors.load(Ordering::Relaxed);
    assert_eq!(fails, Some(expected), "{stats}");
    assert_eq!(expected, 2 * PER_CLIENT / 2 + PER_CLIENT / 3);
    s.stop().await;
}
