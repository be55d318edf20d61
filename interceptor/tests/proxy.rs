//! Forwarding, protocols and counting through real sockets on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use keda_http_interceptor::endpoints::EndpointSet;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;

type Frames = mpsc::Sender<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>;

fn channel_body(capacity: usize) -> (Frames, TestBody) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))))
}

/// Echoes what the backend saw as JSON: method, uri, version, headers.
async fn echo_backend() -> std::net::SocketAddr {
    backend(|req: Request<hyper::body::Incoming>| async move {
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    serde_json::Value::String(v.to_str().unwrap_or("?").to_owned()),
                )
            })
            .collect();
        let body = serde_json::json!({
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "version": format!("{:?}", req.version()),
            "headers": headers,
        });
        let mut response = Response::new(full(body.to_string()));
        response
            .headers_mut()
            .insert("x-backend", HeaderValue::from_static("echo"));
        response
            .headers_mut()
            .insert("keep-alive", HeaderValue::from_static("timeout=5"));
        response
    })
    .await
}

#[tokio::test]
async fn forwards_preserving_host_and_setting_forwarded_headers() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let backend = echo_backend().await;
        h.set_endpoints("ns", "app", 80, http1(&[backend]));
        h.install(vec![route("ns", "app", &["example.com"], &[])])
            .await;

        let req = Request::get(h.proxy_url("/a/b?x=1&y=2"))
            .header(header::HOST, "example.com:8080")
            .header(header::CONNECTION, "x-secret")
            .header("x-secret", "1")
            .header("proxy-authorization", "Basic x")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-kept", "yes")
            .body(empty())
            .expect("request");
        let response = client().request(req).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-backend"], "echo");
        assert_eq!(response.headers()["x-keda-http-cold-start"], "false");
        assert!(
            response.headers().get("keep-alive").is_none(),
            "hop-by-hop response header removed"
        );
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(seen["uri"], "/a/b?x=1&y=2");
        assert_eq!(seen["version"], "HTTP/1.1");
        let headers = &seen["headers"];
        assert_eq!(headers["host"], "example.com:8080", "Host preserved");
        assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        assert_eq!(headers["x-forwarded-host"], "example.com:8080");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-kept"], "yes");
        assert!(
            headers.get("x-secret").is_none(),
            "Connection-listed header removed"
        );
        assert!(headers.get("proxy-authorization").is_none());
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn routes_by_host_path_and_headers_and_404s_the_rest() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let named =
            |name: &'static str| backend(move |_req| async move { Response::new(full(name)) });
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        h.set_endpoints("ns", "a", 80, http1(&[a]));
        h.set_endpoints("ns", "b", 80, http1(&[b]));
        h.set_endpoints("ns", "c", 80, http1(&[c]));
        h.install(vec![
            route("ns", "a", &["example.com"], &[]),
            route("ns", "b", &["*.example.com"], &["/api"]),
            route_with(
                "ns",
                "c",
                "c",
                &["example.com"],
                &["/api"],
                &[("x-tenant", Some("c"))],
                None,
            ),
        ])
        .await;

        let (status, _, body) = get(&h.proxy_url("/"), "example.com").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"a"[..]));
        let (_, _, body) = get(&h.proxy_url("/api/x"), "x.example.com").await;
        assert_eq!(&body[..], b"b");
        let (_, _, body) = get(&h.proxy_url("/x"), "EXAMPLE.com").await;
        assert_eq!(&body[..], b"a", "case-insensitive host");
        let req = Request::get(h.proxy_url("/api/v1"))
            .header(header::HOST, "example.com")
            .header("x-tenant", "c")
            .body(empty())
            .expect("request");
        let body = client()
            .request(req)
            .await
            .expect("response")
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"c");
        let (_, _, body) = get(&h.proxy_url("/api/v1"), "example.com").await;
        assert_eq!(
            &body[..],
            b"a",
            "header mismatch falls back to the shorter prefix"
        );

        let (status, headers, body) = get(&h.proxy_url("/"), "unknown.org").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(&body[..], b"Not Found\n");
        let (status, _, _) = get(&h.proxy_url("/api"), "example.com.evil").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // 404s are not counted.
        assert_eq!(h.queue.snapshot().0["ns/a"].request_count, 3);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn streaming_response_keeps_the_request_counted_until_it_ends() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let (frames_tx, frames_rx) = mpsc::channel::<Frames>(1);
        let frames_rx = Arc::new(tokio::sync::Mutex::new(frames_rx));
        let body_senders = Arc::new(tokio::sync::Mutex::new(Some(frames_tx)));
        let backend_addr = backend(move |_req| {
            let senders = body_senders.clone();
            async move {
                let (tx, body) = channel_body(1);
                if let Some(out) = senders.lock().await.take() {
                    let _ = out.send(tx).await;
                }
                Response::new(body)
            }
        })
        .await;
        h.set_endpoints("ns", "stream", 80, http1(&[backend_addr]));
        h.install(vec![route("ns", "stream", &[], &[])]).await;

        let req = Request::get(h.proxy_url("/"))
            .header(header::HOST, "any")
            .body(empty())
            .expect("request");
        let response = client().request(req).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let upstream = frames_rx
            .lock()
            .await
            .recv()
            .await
            .expect("backend body sender");
        let mut body = response.into_body();

        upstream
            .send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .await
            .expect("send");
        let frame = body.frame().await.expect("frame").expect("ok");
        assert_eq!(frame.into_data().expect("data"), "first");
        assert_eq!(
            h.queue.snapshot().0["ns/stream"].concurrency,
            1,
            "headers sent, body open: still in flight"
        );

        upstream
            .send(Ok(Frame::data(Bytes::from_static(b"second"))))
            .await
            .expect("send");
        let frame = body.frame().await.expect("frame").expect("ok");
        assert_eq!(frame.into_data().expect("data"), "second");
        assert_eq!(h.queue.snapshot().0["ns/stream"].concurrency, 1);

        drop(upstream); // end of the upstream body
        assert!(body.frame().await.is_none(), "body ends");
        h.wait_concurrency("ns/stream", 0).await;
        let counts = h.queue.snapshot().0["ns/stream"];
        assert_eq!((counts.concurrency, counts.request_count), (0, 1));
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn client_going_away_releases_the_count() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let (_keep_tx, keep_rx) = watch::channel(());
        let backend_addr = backend(move |_req| {
            let mut keep = keep_rx.clone();
            async move {
                let (tx, body) = channel_body(1);
                tokio::spawn(async move {
                    let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
                    let _ = keep.changed().await; // never: hold the body open
                    drop(tx);
                });
                Response::new(body)
            }
        })
        .await;
        h.set_endpoints("ns", "gone", 80, http1(&[backend_addr]));
        h.install(vec![route("ns", "gone", &[], &[])]).await;
        let req = Request::get(h.proxy_url("/"))
            .header(header::HOST, "any")
            .body(empty())
            .expect("request");
        let response = client().request(req).await.expect("response");
        let mut body = response.into_body();
        body.frame().await.expect("frame").expect("ok");
        assert_eq!(h.queue.snapshot().0["ns/gone"].concurrency, 1);
        drop(body); // the client goes away
        h.wait_concurrency("ns/gone", 0).await;
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sse_events_arrive_before_the_response_ends() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let (next_tx, next_rx) = watch::channel(0u32);
        let backend_addr = backend(move |_req| {
            let mut next = next_rx.clone();
            async move {
                let (tx, body) = channel_body(1);
                tokio::spawn(async move {
                    for i in 1..=3u32 {
                        let event = format!("data: event {i}\n\n");
                        if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                            return;
                        }
                        // The next event only after the client confirmed this one.
                        if next.wait_for(|n| *n >= i).await.is_err() {
                            return;
                        }
                    }
                });
                let mut response = Response::new(body);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                response
            }
        })
        .await;
        h.set_endpoints("ns", "sse", 80, http1(&[backend_addr]));
        h.install(vec![route("ns", "sse", &[], &["/events"])]).await;
        let req = Request::get(h.proxy_url("/events"))
            .header(header::HOST, "x")
            .body(empty())
            .expect("request");
        let response = client().request(req).await.expect("response");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let mut body = response.into_body();
        for i in 1..=3u32 {
            let frame = body.frame().await.expect("frame").expect("ok");
            assert_eq!(
                frame.into_data().expect("data"),
                format!("data: event {i}\n\n")
            );
            next_tx.send_replace(i);
        }
        assert!(body.frame().await.is_none());
        h.stop().await;
    })
    .await;
}

/// The largest number of bytes the kernel may hold for one TCP connection (its receive plus
/// send buffer maximum), read from `/proc`, with Linux's stock defaults when unreadable.
fn kernel_socket_buffer_max() -> u64 {
    let third = |path: &str, default: u64| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
            .unwrap_or(default)
    };
    third("/proc/sys/net/ipv4/tcp_rmem", 6 << 20) + third("/proc/sys/net/ipv4/tcp_wmem", 4 << 20)
}

/// The client uploads a body in 64 KiB chunks. The backend stops reading after 8 MiB; the
/// client must then stall (the proxy applies backpressure instead of buffering). What is "sent
/// but not yet received by the backend" may sit in the kernel's buffers of the two hops
/// (client→proxy, proxy→backend) and in hyper's buffers, so the bound is those two hops'
/// kernel maximum plus 16 MiB, and the body is twice that bound: a proxy that absorbed the
/// body would exceed it. Then the backend resumes and counts every byte.
#[tokio::test]
async fn large_upload_is_streamed_with_backpressure() {
    let in_transit_bound: u64 = 2 * kernel_socket_buffer_max() + (16 << 20);
    let total: u64 = (2 * in_transit_bound).max(64 << 20);
    const CHUNK: usize = 64 << 10;
    const PAUSE_AT: u64 = 8 << 20;
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let received = Arc::new(AtomicU64::new(0));
        let (paused_tx, paused_rx) = oneshot::channel::<()>();
        let (resume_tx, resume_rx) = oneshot::channel::<()>();
        let gate = Arc::new(tokio::sync::Mutex::new(Some((paused_tx, resume_rx))));
        let backend_received = received.clone();
        let backend_addr = backend(move |req: Request<hyper::body::Incoming>| {
            let received = backend_received.clone();
            let gate = gate.clone();
            async move {
                let mut body = req.into_body();
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else { break };
                    if let Some(data) = frame.data_ref() {
                        let total = received.fetch_add(data.len() as u64, Ordering::SeqCst)
                            + data.len() as u64;
                        if total >= PAUSE_AT
                            && let Some((paused, resume)) = gate.lock().await.take()
                        {
                            let _ = paused.send(());
                            let _ = resume.await;
                        }
                    }
                }
                Response::new(full(received.load(Ordering::SeqCst).to_string()))
            }
        })
        .await;
        h.set_endpoints("ns", "upload", 80, http1(&[backend_addr]));
        h.install(vec![route("ns", "upload", &[], &[])]).await;

        let sent = Arc::new(AtomicU64::new(0));
        let (progress_tx, mut progress_rx) = watch::channel(0u64);
        let (frames, body) = channel_body(1);
        let sender_sent = sent.clone();
        let sender = tokio::spawn(async move {
            let chunk = Bytes::from(vec![0x5a; CHUNK]);
            while sender_sent.load(Ordering::SeqCst) < total {
                if frames.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                    return;
                }
                let now = sender_sent.fetch_add(CHUNK as u64, Ordering::SeqCst) + CHUNK as u64;
                progress_tx.send_replace(now);
            }
        });
        let req = Request::post(h.proxy_url("/upload"))
            .header(header::HOST, "x")
            .header(header::CONTENT_LENGTH, total)
            .body(body)
            .expect("request");
        let response = tokio::spawn(client().request(req));

        paused_rx.await.expect("backend paused");
        // Wait until the client stalls: no progress for a while (or everything sent, which fails).
        loop {
            match tokio::time::timeout(Duration::from_millis(500), progress_rx.changed()).await {
                Ok(Ok(())) if *progress_rx.borrow() < total => continue,
                _ => break,
            }
        }
        let stalled_at = sent.load(Ordering::SeqCst);
        let in_transit = stalled_at - received.load(Ordering::SeqCst);
        assert!(
            stalled_at < total,
            "the whole upload was absorbed while the backend was not reading"
        );
        assert!(
            in_transit < in_transit_bound,
            "{in_transit} bytes in transit (bound {in_transit_bound}): the proxy buffers"
        );
        resume_tx.send(()).expect("resume");

        let response = response.await.expect("joined").expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body, total.to_string());
        sender.await.expect("sender");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
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
                    // Close frames are answered by tungstenite itself while reading.
                    while let Some(Ok(msg)) = ws.next().await {
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        h.set_endpoints("ns", "ws", 80, http1(&[ws_addr]));
        h.install(vec![route("ns", "ws", &["ws.example.com"], &[])])
            .await;

        let stream = tokio::net::TcpStream::connect(h.addrs.proxy)
            .await
            .expect("connect");
        let (mut ws, response) =
            tokio_tungstenite::client_async("ws://ws.example.com/chat", stream)
                .await
                .expect("handshake through the proxy");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        h.wait_concurrency("ns/ws", 1).await;
        for text in ["hello", "world"] {
            ws.send(tokio_tungstenite::tungstenite::Message::text(text))
                .await
                .expect("send");
            let echoed = ws.next().await.expect("message").expect("ok");
            assert_eq!(echoed.into_text().expect("text").as_str(), text);
        }
        assert_eq!(
            h.queue.snapshot().0["ns/ws"].concurrency,
            1,
            "upgraded connection counts"
        );
        ws.close(None).await.expect("close");
        while let Some(Ok(_)) = ws.next().await {}
        drop(ws);
        h.wait_concurrency("ns/ws", 0).await;
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn h2c_inbound_is_forwarded_to_an_http1_backend() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let backend = echo_backend().await;
        h.set_endpoints("ns", "app", 80, http1(&[backend]));
        h.install(vec![route("ns", "app", &["h2.example.com"], &[])])
            .await;
        let req = Request::get("http://h2.example.com/path?q=1")
            .body(empty())
            .expect("request");
        // Dial the proxy but keep the request authority: a one-connection h2 client.
        let stream = tokio::net::TcpStream::connect(h.addrs.proxy)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2c handshake");
        tokio::spawn(conn);
        let response = sender.send_request(req).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(seen["version"], "HTTP/1.1");
        assert_eq!(seen["uri"], "/path?q=1");
        assert_eq!(seen["headers"]["host"], "h2.example.com");
        h.stop().await;
    })
    .await;
}

/// A gRPC-like bidirectional stream: h2c in, h2c out (appProtocol kubernetes.io/h2c); each
/// request message is echoed before the next is sent; trailers come back.
#[tokio::test]
async fn grpc_like_bidi_stream_over_h2c_upstream() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let backend_addr = backend(|req: Request<hyper::body::Incoming>| async move {
            assert_eq!(req.version(), http::Version::HTTP_2, "upstream speaks h2c");
            let authority = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let te = req.headers().get(header::TE).cloned();
            let (tx, body) = channel_body(1);
            let mut incoming = req.into_body();
            tokio::spawn(async move {
                while let Some(Ok(frame)) = incoming.frame().await {
                    if let Ok(data) = frame.into_data()
                        && tx.send(Ok(Frame::data(data))).await.is_err()
                    {
                        return;
                    }
                }
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
            });
            let mut response = Response::new(body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            response.headers_mut().insert(
                "x-authority",
                HeaderValue::from_str(&authority).expect("value"),
            );
            if let Some(te) = te {
                response.headers_mut().insert("x-te", te);
            }
            response
        })
        .await;
        h.set_endpoints("ns", "grpc", 80, EndpointSet::h2c([backend_addr]));
        h.install(vec![route("ns", "grpc", &["grpc.example.com"], &[])])
            .await;

        let (frames, body) = channel_body(1);
        let req = Request::post("http://grpc.example.com/echo.Echo/Stream")
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .body(body)
            .expect("request");
        let stream = tokio::net::TcpStream::connect(h.addrs.proxy)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2c handshake");
        tokio::spawn(conn);
        frames
            .send(Ok(Frame::data(Bytes::from_static(b"msg-0"))))
            .await
            .expect("send");
        let response = sender.send_request(req).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["x-authority"],
            "grpc.example.com",
            ":authority preserved"
        );
        assert_eq!(response.headers()["x-te"], "trailers");
        let mut body = response.into_body();
        let first = body.frame().await.expect("frame").expect("ok");
        assert_eq!(first.into_data().expect("data"), "msg-0");
        for i in 1..4 {
            let msg = format!("msg-{i}");
            frames
                .send(Ok(Frame::data(Bytes::from(msg.clone()))))
                .await
                .expect("send");
            let echoed = body.frame().await.expect("frame").expect("ok");
            assert_eq!(echoed.into_data().expect("data"), msg);
        }
        assert_eq!(h.queue.snapshot().0["ns/grpc"].concurrency, 1);
        drop(frames);
        let trailers = body.frame().await.expect("frame").expect("ok");
        assert_eq!(
            trailers.trailers_ref().expect("trailers")["grpc-status"],
            "0"
        );
        assert!(body.frame().await.is_none());
        h.wait_concurrency("ns/grpc", 0).await;
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn connect_failure_retries_on_another_endpoint() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let hits = Arc::new(AtomicUsize::new(0));
        let backend_hits = hits.clone();
        let live = backend(move |_req| {
            let hits = backend_hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                Response::new(full("live"))
            }
        })
        .await;
        let dead = refused_addr().await;
        h.set_endpoints("ns", "app", 80, http1(&[dead, live]));
        h.install(vec![route("ns", "app", &[], &[])]).await;
        // Round robin alternates: every other first pick is the refused endpoint.
        for _ in 0..6 {
            let req = Request::post(h.proxy_url("/"))
                .header(header::HOST, "x")
                .body(full("payload"))
                .expect("request");
            let response = client().request(req).await.expect("response");
            assert_eq!(response.status(), StatusCode::OK);
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(&body[..], b"live");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 6);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn unreachable_and_missing_endpoints() {
    bounded(async {
        // Without a ready endpoint a request is held for a cold start (tests/kube.rs); a
        // readiness timeout bounds the wait.
        let h = Harness::start(|c| c.readiness_timeout = Duration::from_millis(50)).await;
        let dead = refused_addr().await;
        h.set_endpoints("ns", "dead", 80, http1(&[dead]));
        h.install(vec![
            route("ns", "dead", &["dead"], &[]),
            route("ns", "cold", &["cold"], &[]),
        ])
        .await;
        let (status, _, body) = get(&h.proxy_url("/"), "dead").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(&body[..], b"Bad Gateway\n");
        let (status, _, body) = get(&h.proxy_url("/"), "cold").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(&body[..], b"Gateway Timeout\n");
        // Both were counted (matched routes) and released.
        let snapshot = h.queue.snapshot().0;
        assert_eq!(
            (
                snapshot["ns/dead"].concurrency,
                snapshot["ns/dead"].request_count
            ),
            (0, 1)
        );
        assert_eq!(
            (
                snapshot["ns/cold"].concurrency,
                snapshot["ns/cold"].request_count
            ),
            (0, 1)
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn timeouts_answer_504() {
    bounded(async {
        let h = Harness::start(|c| c.response_header_timeout = Duration::from_millis(200)).await;
        let (_never_tx, never_rx) = watch::channel(());
        let stuck = backend(move |_req| {
            let mut never = never_rx.clone();
            async move {
                let _ = never.changed().await;
                Response::new(empty())
            }
        })
        .await;
        h.set_endpoints("ns", "stuck", 80, http1(&[stuck]));
        h.install(vec![
            route("ns", "stuck", &["global"], &[]),
            route_with(
                "ns",
                "deadline",
                "stuck",
                &["deadline"],
                &[],
                &[],
                Some(timeouts(
                    Some(Duration::from_millis(150)),
                    Some(Duration::ZERO),
                )),
            ),
        ])
        .await;
        let (status, _, body) = get(&h.proxy_url("/"), "global").await;
        assert_eq!(
            status,
            StatusCode::GATEWAY_TIMEOUT,
            "response-header timeout"
        );
        assert_eq!(&body[..], b"Gateway Timeout\n");
        let (status, _, _) = get(&h.proxy_url("/"), "deadline").await;
        assert_eq!(
            status,
            StatusCode::GATEWAY_TIMEOUT,
            "per-route request timeout"
        );
        h.stop().await;
    })
    .await;
}

/// A raw backend that reads one request head, then reports when its connection is closed
/// by the proxy (the upstream request was cancelled).
async fn cancel_detecting_backend() -> (std::net::SocketAddr, mpsc::Receiver<&'static str>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (events_tx, events_rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let events = events_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = events.send("closed").await;
                            return;
                        }
                        Ok(n) => {
                            seen.extend_from_slice(&buf[..n]);
                            if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                                let _ = events.send("request").await;
                                seen.clear();
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, events_rx)
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let (addr, mut events) = cancel_detecting_backend().await;
        h.set_endpoints("ns", "slow", 80, http1(&[addr]));
        h.install(vec![route("ns", "slow", &[], &[])]).await;

        // HTTP/1.1 client that goes away before the response.
        let mut stream = tokio::net::TcpStream::connect(h.addrs.proxy)
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(events.recv().await, Some("request"));
        h.wait_concurrency("ns/slow", 1).await;
        drop(stream);
        assert_eq!(
            events.recv().await,
            Some("closed"),
            "upstream request cancelled"
        );
        h.wait_concurrency("ns/slow", 0).await;

        // h2c client that resets its stream.
        let tcp = tokio::net::TcpStream::connect(h.addrs.proxy)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("h2c handshake");
        let conn = tokio::spawn(conn);
        let req = Request::get("http://x/").body(empty()).expect("request");
        let pending = tokio::spawn(async move { sender.send_request(req).await });
        assert_eq!(events.recv().await, Some("request"));
        h.wait_concurrency("ns/slow", 1).await;
        pending.abort();
        conn.abort();
        assert_eq!(
            events.recv().await,
            Some("closed"),
            "upstream request cancelled"
        );
        h.wait_concurrency("ns/slow", 0).await;
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn request_deadline_ends_a_streaming_body() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let (_keep_tx, keep_rx) = watch::channel(());
        let backend_addr = backend(move |_req| {
            let mut keep = keep_rx.clone();
            async move {
                let (tx, body) = channel_body(1);
                tokio::spawn(async move {
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from_static(b"partial"))))
                        .await;
                    let _ = keep.changed().await; // never: the body stays open
                    drop(tx);
                });
                Response::new(body)
            }
        })
        .await;
        h.set_endpoints("ns", "slow", 80, http1(&[backend_addr]));
        h.install(vec![route_with(
            "ns",
            "slow",
            "slow",
            &[],
            &[],
            &[],
            Some(timeouts(Some(Duration::from_millis(300)), None)),
        )])
        .await;
        let req = Request::get(h.proxy_url("/"))
            .header(header::HOST, "x")
            .body(empty())
            .expect("request");
        let response = client().request(req).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let first = body.frame().await.expect("frame").expect("ok");
        assert_eq!(first.into_data().expect("data"), "partial");
        // The deadline cuts the stream: an error (or an early end), never more data.
        match body.frame().await {
            None | Some(Err(_)) => {}
            Some(Ok(frame)) => panic!("unexpected frame after the deadline: {frame:?}"),
        }
        h.wait_concurrency("ns/slow", 0).await;
        h.stop().await;
    })
    .await;
}

/// An h2c backend that closes every connection (GOAWAY) after one response: the next request
/// finds the cached upstream connection closed or closing and must not fail.
#[tokio::test]
async fn h2c_upstream_reconnects_after_the_backend_closes_its_connection() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (served_tx, served_rx) = oneshot::channel::<()>();
                    let served_tx = Arc::new(std::sync::Mutex::new(Some(served_tx)));
                    let service = hyper::service::service_fn(move |_req| {
                        if let Some(tx) = served_tx.lock().expect("lock").take() {
                            let _ = tx.send(());
                        }
                        async { Ok::<_, std::convert::Infallible>(Response::new(full("h2"))) }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = served_rx => {}
                    }
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                });
            }
        });
        h.set_endpoints("ns", "h2", 80, EndpointSet::h2c([addr]));
        h.install(vec![route("ns", "h2", &[], &[])]).await;
        for _ in 0..3 {
            let (status, _, body) = get(&h.proxy_url("/"), "x").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], b"h2");
        }
        // Each connection serves one request, so at least one new connection was needed
        // (a request may slip into the graceful-close window of the previous one).
        assert!(connections.load(Ordering::SeqCst) >= 2);
        h.stop().await;
    })
    .await;
}
