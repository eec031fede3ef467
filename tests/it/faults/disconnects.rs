//! Clients that disconnect mid-request and mid-stream.

use super::*;

fn http_request(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_disconnect_mid_request_and_mid_stream_harm_nobody() {
    let repo = Repo::new()
        .with("slow", &slow(), Some(SLOW_SERIAL))
        .with("m", &swap_model(1), None);
    let s = TestServer::start(repo.path()).await;
    let base = s.base();
    let tally = Arc::new(Tally::default());
    let mut load = Load::default();
    swap_clients(&mut load, &tally, &base, "m", 2, &[1]);
    // A gRPC client on m as well.
    {
        let (tally, stop, mut client) =
            (tally.clone(), load.stop.clone(), grpc_client(s.grpc).await);
        load.tasks.push(tokio::spawn(async move {
            let mut x = 0f32;
            while !stop.load(Ordering::Relaxed) {
                x += 1.0;
                let request = x_grpc("m", x);
                tally.sent.fetch_add(1, Ordering::Relaxed);
                match tokio::time::timeout(REQUEST_LIMIT, client.model_infer(request)).await {
                    Ok(Ok(r))
                        if fp32_rows(&r.get_ref().raw_output_contents[0]) == vec![x + 1.0] =>
                    {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(other) => tally.wrong(format!("grpc m x={x}: {other:?}")),
                    Err(_) => tally.lost(format!("grpc m x={x}: no answer")),
                }
            }
        }));
    }
    more_ok(&tally, 20).await;
    let mut disconnects = 0;

    // (a) Half a body, then close; and half the headers, then close.
    for i in 0..20 {
        let path = if i % 2 == 0 {
            "/v2/models/m/infer"
        } else {
            "/v2/models/slow/infer"
        };
        let request = http_request(s.http, path, &x_json(i as f32));
        let cut = if i % 4 < 2 { request.len() - 20 } else { 40 };
        let mut socket = tokio::net::TcpStream::connect(s.http).await.unwrap();
        socket.write_all(&request.as_bytes()[..cut]).await.unwrap();
        drop(socket);
        disconnects += 1;
    }
    more_ok(&tally, 30).await;

    // (b) Full requests to the slow model; close once they are admitted.
    let ran_before = s
        .metric("sluice_executions_total", &[("model", "slow")])
        .await;
    let mut sockets = Vec::new();
    for i in 0..6 {
        let mut socket = tokio::net::TcpStream::connect(s.http).await.unwrap();
        let request = http_request(s.http, "/v2/models/slow/infer", &x_json(i as f32));
        socket.write_all(request.as_bytes()).await.unwrap();
        sockets.push(socket);
    }
    eventually(
        "the slow requests to be admitted",
        Duration::from_secs(30),
        || async {
            s.metric("sluice_inflight_requests", &[("model", "slow")])
                .await
                >= 3.0
        },
    )
    .await;
    drop(sockets);
    disconnects += 6;

    // (c) gRPC ModelStreamInfer: six requests to the slow model, one answer
    // read, then the stream and the channel are dropped.
    {
        let mut client = grpc_client(s.grpc).await;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        for i in 0..6 {
            tx.send(x_grpc("slow", i as f32)).await.unwrap();
        }
        let mut responses = client
            .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(REQUEST_LIMIT, responses.message())
            .await
            .expect("a stream answer")
            .unwrap()
            .unwrap();
        assert!(first.error_message.is_empty(), "{first:?}");
        drop(responses);
        drop(tx);
        drop(client);
        disconnects += 1;
    }
    more_ok(&tally, 30).await;

    // Everything admitted is answered or dropped: the slow model's in-flight
    // and queue go to 0 while the other clients go on; then every model's.
    let drained = |model: Option<&'static str>| {
        let s = &s;
        async move {
            let labels: &[(&str, &str)] = match &model {
                Some(m) => &[("model", m)],
                None => &[],
            };
            let text = s.metrics().await;
            metric(&text, "sluice_inflight_requests", labels) == 0.0
                && metric(&text, "sluice_pending_requests", labels) == 0.0
        }
    };
    eventually("the slow model to drain", Duration::from_secs(30), || {
        drained(Some("slow"))
    })
    .await;
    let text = s.metrics().await;
    let slow_runs = metric(&text, "sluice_executions_total", &[("model", "slow")]) - ran_before;
    // The server is whole: the slow model answers, and load went on unharmed.
    tally.sent.fetch_add(1, Ordering::Relaxed);
    let (status, out) = s
        .post_raw("/v2/models/slow/infer", x_json(42.0).into_bytes())
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][0]["data"][0].as_f64(), Some(42.0));
    tally.ok.fetch_add(1, Ordering::Relaxed);
    load.stop().await;
    eventually("every model to drain", Duration::from_secs(30), || {
        drained(None)
    })
    .await;
    tally.finish(
        "client_disconnects",
        &format!("{disconnects} disconnecting clients; {slow_runs} of their 12 slow requests ran"),
    );
    s.stop().await;
}
