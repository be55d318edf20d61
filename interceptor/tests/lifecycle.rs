//! Admin endpoints, metrics and graceful shutdown.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use keda_http_interceptor::Phase;
use tokio::sync::{mpsc, oneshot};

#[tokio::test]
async fn queue_is_byte_exact_and_lists_every_route() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let addr = backend(|_req| async { Response::new(full("ok")) }).await;
        h.set_endpoints("default", "my-app", 80, http1(&[addr]));
        h.install(vec![
            route("default", "my-app", &["my-app.example.com"], &[]),
            route("demo", "other", &["other.example.com"], &[]),
        ])
        .await;
        for _ in 0..3 {
            let (status, _, _) = get(&h.proxy_url("/"), "my-app.example.com").await;
            assert_eq!(status, StatusCode::OK);
        }
        h.wait_concurrency("default/my-app", 0).await;
        for method in ["GET", "POST"] {
            let req = Request::builder()
                .method(method)
                .uri(h.admin_url("/queue"))
                .body(empty())
                .expect("request");
            let response = client().request(req).await.expect("response");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let body = response.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(
                body,
                Bytes::from_static(
                    b"{\"default/my-app\":{\"Concurrency\":0,\"RequestCount\":3},\"demo/other\":{\"Concurrency\":0,\"RequestCount\":0}}\n"
                )
            );
        }
        // A route that disappears leaves /queue.
        h.install(vec![route("demo", "other", &["other.example.com"], &[])]).await;
        let (_, _, body) = get(&h.admin_url("/queue"), "admin").await;
        assert_eq!(&body[..], b"{\"demo/other\":{\"Concurrency\":0,\"RequestCount\":0}}\n");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn probes_routes_and_unknown_admin_paths() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let (status, _, body) = get(&h.admin_url("/readyz"), "admin").await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::SERVICE_UNAVAILABLE, &b"Service Unavailable"[..]),
            "no table yet"
        );
        let (status, _, body) = get(&h.admin_url("/livez"), "admin").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"OK"[..]));

        let addr = backend(|_req| async { Response::new(full("ok")) }).await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &["app.example.com"], &["/api"])])
            .await;
        let (status, _, body) = get(&h.admin_url("/readyz"), "admin").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"OK"[..]));

        let (status, _, body) = get(&h.admin_url("/routes"), "admin").await;
        assert_eq!(status, StatusCode::OK);
        let routes: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(routes[0]["key"], "ns/app");
        assert_eq!(routes[0]["target"], "ns/app:80");
        assert_eq!(routes[0]["readyEndpoints"][0], addr.to_string());
        assert_eq!(routes[0]["rules"][0]["hosts"][0], "app.example.com");

        let (status, _, _) = get(&h.admin_url("/nope"), "admin").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn queue_watch_pushes_when_a_route_becomes_active() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let (release_tx, release_rx) = mpsc::channel::<oneshot::Sender<()>>(1);
        let release_rx = std::sync::Arc::new(tokio::sync::Mutex::new(release_rx));
        let addr = backend(move |_req| {
            let release_rx = release_rx.clone();
            async move {
                // Hold the response until the test says so.
                let waiter = release_rx.lock().await.recv().await;
                if let Some(done) = waiter {
                    let _ = done.send(());
                }
                Response::new(full("ok"))
            }
        })
        .await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &[], &[])]).await;

        let req = Request::get(h.admin_url("/queue/watch"))
            .body(empty())
            .expect("request");
        let response = client().request(req).await.expect("response");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/x-ndjson"
        );
        let mut stream = response.into_body();
        let first = stream
            .frame()
            .await
            .expect("frame")
            .expect("ok")
            .into_data()
            .expect("data");
        assert_eq!(
            &first[..],
            b"{\"ns/app\":{\"Concurrency\":0,\"RequestCount\":0}}\n"
        );

        let url = h.proxy_url("/");
        let request = tokio::spawn(async move { get(&url, "x").await });
        // Lines arrive on change or heartbeat; wait for the one showing the request.
        loop {
            let line = stream
                .frame()
                .await
                .expect("frame")
                .expect("ok")
                .into_data()
                .expect("data");
            if &line[..] == b"{\"ns/app\":{\"Concurrency\":1,\"RequestCount\":1}}\n" {
                break;
            }
            assert_eq!(
                &line[..],
                b"{\"ns/app\":{\"Concurrency\":0,\"RequestCount\":0}}\n"
            );
        }
        let (done_tx, done_rx) = oneshot::channel();
        release_tx.send(done_tx).await.expect("backend waiting");
        done_rx.await.expect("released");
        let (status, _, _) = request.await.expect("joined");
        assert_eq!(status, StatusCode::OK);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn metrics_use_the_official_names() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let addr = backend(|_req| async { Response::new(full("ok")) }).await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &["app"], &[])]).await;
        get(&h.proxy_url("/"), "app").await;
        get(&h.proxy_url("/"), "nothing").await;
        h.wait_concurrency("ns/app", 0).await;
        let metrics = h.addrs.metrics.expect("metrics enabled");
        let (status, _, body) = get(&format!("http://{metrics}/metrics"), "m").await;
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("interceptor_request_count_total{code=\"200\",method=\"GET\",route_name=\"app\",route_namespace=\"ns\"} 1"), "{text}");
        assert!(text.contains("interceptor_request_count_total{code=\"404\",method=\"GET\",route_name=\"\",route_namespace=\"\"} 1"), "{text}");
        assert!(text.contains("interceptor_request_duration_seconds_bucket{le=\"0.005\",code=\"200\",method=\"GET\",route_name=\"app\",route_namespace=\"ns\",cold_start=\"false\"}"), "{text}");
        assert!(text.contains("interceptor_request_concurrency{route_name=\"app\",route_namespace=\"ns\"} 0"), "{text}");
        assert!(text.contains("interceptor_request_duration_seconds_bucket{le=\"300.0\",code=\"200\""), "{text}");
        for series in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"] {
            assert!(text.contains(&format!("\n{series} ")), "{series}: {text}");
        }
        h.stop().await;
    })
    .await;
}

/// SIGTERM (through the in-process handle): readiness fails at once while the proxy still
/// serves (with `Connection: close`), then the listener closes, and an in-flight request
/// started before shutdown completes normally before `run` returns.
#[tokio::test]
async fn graceful_drain_finishes_an_in_flight_request() {
    bounded(async {
        let mut h = Harness::start(|c| {
            c.shutdown_delay = Duration::from_millis(300);
            c.drain_timeout = Duration::from_secs(20);
        })
        .await;
        let (arrived_tx, mut arrived_rx) = mpsc::channel::<oneshot::Sender<()>>(4);
        let addr = backend(move |req: Request<hyper::body::Incoming>| {
            let arrived_tx = arrived_tx.clone();
            async move {
                if req.uri().path() == "/slow" {
                    let (release_tx, release_rx) = oneshot::channel();
                    let _ = arrived_tx.send(release_tx).await;
                    let _ = release_rx.await;
                }
                Response::new(full("done"))
            }
        })
        .await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &[], &[])]).await;

        let proxy_url = h.proxy_url("/slow");
        let in_flight = tokio::spawn(async move { get(&proxy_url, "x").await });
        let release = arrived_rx
            .recv()
            .await
            .expect("request reached the backend");

        h.shutdown();
        h.wait_phase(Phase::Draining).await;
        let (status, _, _) = get(&h.admin_url("/readyz"), "admin").await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready while draining"
        );
        // Still serving during the shutdown delay, but asking HTTP/1 clients to go away.
        if *h.phase.borrow() == Phase::Draining {
            let (status, headers, _) = get(&h.proxy_url("/fast"), "x").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers[header::CONNECTION], "close");
        }

        h.wait_phase(Phase::Closing).await;
        assert!(
            tokio::net::TcpStream::connect(h.addrs.proxy).await.is_err(),
            "listener closed"
        );
        assert!(!in_flight.is_finished());
        release.send(()).expect("backend waiting");
        let (status, _, body) = in_flight.await.expect("joined");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"done");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn drain_timeout_bounds_shutdown() {
    bounded(async {
        let mut h = Harness::start(|c| {
            c.shutdown_delay = Duration::ZERO;
            c.drain_timeout = Duration::from_millis(200);
        })
        .await;
        let (arrived_tx, mut arrived_rx) = mpsc::channel::<()>(1);
        let addr = backend(move |_req| {
            let arrived_tx = arrived_tx.clone();
            async move {
                let _ = arrived_tx.send(()).await;
                std::future::pending::<()>().await;
                Response::new(full("never"))
            }
        })
        .await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &[], &[])]).await;
        let url = h.proxy_url("/");
        let stuck = tokio::spawn(async move {
            let req = Request::get(url)
                .header(header::HOST, "x")
                .body(empty())
                .expect("request");
            client().request(req).await
        });
        arrived_rx
            .recv()
            .await
            .expect("request reached the backend");
        h.shutdown();
        h.wait_phase(Phase::Stopped).await;
        assert!(
            stuck.await.expect("joined").is_err(),
            "the stuck request was cut"
        );
        h.stop().await;
    })
    .await;
}

#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn access_log_in_combined_log_format() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The test runtime is single-threaded, so every task logs through this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    bounded(async {
        let h = Harness::start(|c| c.log_requests = true).await;
        let addr = backend(|_req| async { Response::new(full("hello")) }).await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &[], &[])]).await;
        let req = Request::get(h.proxy_url("/path?q=1"))
            .header(header::HOST, "x")
            .header(header::USER_AGENT, "agent/1.0")
            .header(header::REFERER, "http://ref/")
            .body(empty())
            .expect("request");
        let response = client().request(req).await.expect("response");
        response.into_body().collect().await.expect("body");
        h.wait_concurrency("ns/app", 0).await;
        h.stop().await;
    })
    .await;
    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    let line = text
        .lines()
        .find(|l| l.contains("GET /path?q=1"))
        .unwrap_or_else(|| panic!("no access line in {text}"));
    assert!(
        line.contains("127.0.0.1 - - [")
            && line.contains("] \"GET /path?q=1 HTTP/1.1\" 200 5 \"http://ref/\" \"agent/1.0\""),
        "{line}"
    );
}

/// An upgraded (WebSocket) connection keeps working while the proxy drains and is cut when
/// the drain timeout passes; its count is released.
#[tokio::test]
async fn upgraded_connections_are_drained_then_cut() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    bounded(async {
        let mut h = Harness::start(|c| {
            c.shutdown_delay = Duration::ZERO;
            c.drain_timeout = Duration::from_millis(300);
        })
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ws_addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        h.set_endpoints("ns", "ws", 80, http1(&[ws_addr]));
        h.install(vec![route("ns", "ws", &[], &[])]).await;
        let stream = tokio::net::TcpStream::connect(h.addrs.proxy)
            .await
            .expect("connect");
        let (mut ws, _) = tokio_tungstenite::client_async("ws://x/", stream)
            .await
            .expect("handshake");
        ws.send(Message::text("before")).await.expect("send");
        assert_eq!(
            ws.next()
                .await
                .expect("msg")
                .expect("ok")
                .into_text()
                .expect("text")
                .as_str(),
            "before"
        );

        h.shutdown();
        h.wait_phase(Phase::Closing).await;
        h.wait_phase(Phase::Stopped).await;
        // Cut by the drain deadline: the stream ends (EOF or error), no echo.
        let _ = ws.send(Message::text("after")).await;
        match ws.next().await {
            None | Some(Err(_)) => {}
            Some(Ok(msg)) => assert!(msg.is_close(), "unexpected {msg:?}"),
        }
        h.wait_concurrency("ns/ws", 0).await;
        h.stop().await;
    })
    .await;
}
