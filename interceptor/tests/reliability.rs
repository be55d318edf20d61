//! Request-path reliability through real sockets on 127.0.0.1: connect retries (direct-pod and
//! Service-address mode), the upgrade allow-list, client body faults and the answer held
//! requests get at the drain deadline.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend counting the requests it received in full (head and complete body).
async fn counting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let complete = Arc::new(AtomicUsize::new(0));
    let seen = complete.clone();
    let addr = backend(move |req: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            if req.into_body().collect().await.is_ok() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            Response::new(full("ok"))
        }
    })
    .await;
    (addr, complete)
}

/// Binds `addr` after `delay` and serves "late" there: a pod Ready before it listens.
fn listen_late(addr: SocketAddr, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the reserved port");
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(full("late")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// The metrics text of `h`.
async fn metrics(h: &Harness) -> String {
    let addr = h.addrs.metrics.expect("metrics enabled");
    let (_, _, body) = get(&format!("http://{addr}/metrics"), "m").await;
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of `interceptor_upstream_connect_retries_total` for route `ns/name`.
fn retries(text: &str, ns: &str, name: &str) -> u64 {
    let prefix = format!(
        "interceptor_upstream_connect_retries_total{{route_name=\"{name}\",route_namespace=\"{ns}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads one response head (and whatever follows in the same reads) from `stream`, until the
/// head is complete or the peer closes.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_pod_ready_before_it_listens_is_reached_by_direct_routing() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let addr = refused_addr().await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &["app"], &[])]).await;
        listen_late(addr, Duration::from_millis(300));
        let (status, _, body) = get(&h.proxy_url("/"), "app").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "late");
        assert!(
            retries(&metrics(&h).await, "ns", "app") > 0,
            "retries counted"
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_pod_ready_before_it_listens_is_reached_through_the_service_address() {
    bounded(async {
        let h = Harness::start(|config| config.direct_pod_routing = false).await;
        let addr = refused_addr().await;
        // Service `127` in namespace `0.0.1` has the Service address `127.0.0.1:<port>`.
        let port = i32::from(addr.port());
        let mut r = route_with("0.0.1", "app", "127", &["app"], &[], &[], None);
        r.spec.target.port = Some(port);
        h.set_endpoints("0.0.1", "127", port, http1(&[addr]));
        h.install(vec![r]).await;
        listen_late(addr, Duration::from_millis(300));
        let (status, _, body) = get(&h.proxy_url("/"), "app").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "late");
        assert!(retries(&metrics(&h).await, "0.0.1", "app") > 0);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn endpoints_refusing_past_the_deadline_get_504_and_are_counted() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let a = refused_addr().await;
        let b = refused_addr().await;
        h.set_endpoints("ns", "app", 80, http1(&[a, b]));
        let r = route_with(
            "ns",
            "app",
            "app",
            &["app"],
            &[],
            &[],
            Some(timeouts(Some(Duration::from_millis(400)), None)),
        );
        h.install(vec![r]).await;
        let (status, _, _) = get(&h.proxy_url("/"), "app").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(retries(&metrics(&h).await, "ns", "app") > 1);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn endpoints_refusing_past_the_retry_bound_get_502_after_that_many_retries() {
    bounded(async {
        let h = Harness::start(|config| config.retry_count = 3).await;
        let addr = refused_addr().await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &["app"], &[])]).await;
        let (status, _, _) = get(&h.proxy_url("/"), "app").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(retries(&metrics(&h).await, "ns", "app"), 3);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_request_whose_body_started_streaming_is_not_retried() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        // A backend that accepts, reads the start of the request, then resets the connection.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !String::from_utf8_lossy(&seen).contains("first") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                drop(stream);
            }
        });
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &["app"], &[])]).await;

        let mut client = TcpStream::connect(h.addrs.proxy).await.expect("connect");
        client
            .write_all(
                b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
            )
            .await
            .expect("write");
        let head = read_head(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
        assert_eq!(connections.load(Ordering::SeqCst), 1, "not re-sent");
        assert_eq!(retries(&metrics(&h).await, "ns", "app"), 0);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn h2c_upgrade_never_reaches_the_backend() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let addr = backend(|req: Request<hyper::body::Incoming>| async move {
            let seen = ["upgrade", "http2-settings", "connection"]
                .iter()
                .filter(|name| req.headers().contains_key(**name))
                .copied()
                .collect::<Vec<_>>()
                .join(",");
            Response::new(full(seen))
        })
        .await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &["app"], &[])]).await;
        let response = raw(
            h.addrs.proxy,
            b"GET / HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\n\
              Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        assert_eq!(body, "", "the backend saw upgrade headers: {response}");
        h.stop().await;
    })
    .await;
}

/// A backend that answers every request `101` switching to `protocol`, and records whether any
/// byte came after the request head (a spliced connection).
async fn switching_backend(protocol: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let spliced = Arc::new(AtomicUsize::new(0));
    let seen = spliced.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n"
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                if let Ok(n) = stream.read(&mut buf).await
                    && n > 0
                {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, spliced)
}

#[tokio::test]
async fn a_backend_101_to_h2c_is_not_spliced() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let (addr, spliced) = switching_backend("h2c").await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &["app"], &[])]).await;
        // Offered h2c (stripped) and offered websocket (allowed) alike: the switch is refused.
        for offer in ["h2c", "websocket"] {
            let mut client = TcpStream::connect(h.addrs.proxy).await.expect("connect");
            let request = format!(
                "GET / HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: {offer}\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            client.write_all(request.as_bytes()).await.expect("write");
            let head = read_head(&mut client).await;
            assert!(head.starts_with("HTTP/1.1 502"), "offer {offer}: {head}");
            // Bytes after the refused switch go nowhere near the backend.
            let _ = client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            spliced.load(Ordering::SeqCst),
            0,
            "a connection was spliced"
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn websocket_works_through_a_cold_start() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ws_addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        // No ready endpoint yet: the handshake is held.
        h.set_endpoints("ns", "ws", 80, http1(&[]));
        h.install(vec![route("ns", "ws", &["ws.test"], &[])]).await;
        let stream = TcpStream::connect(h.addrs.proxy).await.expect("connect");
        let handshake = tokio::spawn(tokio_tungstenite::client_async("ws://ws.test/", stream));
        h.wait_concurrency("ns/ws", 1).await;
        h.set_endpoints("ns", "ws", 80, http1(&[ws_addr]));
        let (mut ws, response) = handshake.await.expect("joined").expect("handshake");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
            .await
            .expect("send");
        let echoed = ws.next().await.expect("message").expect("ok");
        assert_eq!(echoed.into_text().expect("text").as_str(), "hi");
        drop(ws);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_bad_chunk_size_is_answered_400_and_nothing_is_forwarded() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        let (addr, complete) = counting_backend().await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &["app"], &[])]).await;
        for body in [
            "zz\r\nhello\r\n0\r\n\r\n",
            "ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ] {
            let request =
                format!("POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
            let response = raw(h.addrs.proxy, request.as_bytes()).await;
            assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        }
        assert_eq!(complete.load(Ordering::SeqCst), 0, "a broken body was forwarded");
        // The next request goes through on a clean upstream connection.
        let (status, _, _) = get(&h.proxy_url("/"), "app").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(complete.load(Ordering::SeqCst), 1);
        let text = metrics(&h).await;
        assert!(
            text.contains("interceptor_request_count_total{code=\"400\",method=\"POST\",route_name=\"app\",route_namespace=\"ns\"} 2"),
            "{text}"
        );
        assert!(!text.contains("code=\"502\""), "{text}");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_held_request_at_the_drain_deadline_gets_503_with_retry_after() {
    bounded(async {
        let mut h = Harness::start(|config| {
            config.drain_timeout = Duration::from_millis(300);
        })
        .await;
        h.set_endpoints("ns", "app", 80, http1(&[]));
        h.install(vec![route("ns", "app", &["app"], &[])]).await;
        let mut client = TcpStream::connect(h.addrs.proxy).await.expect("connect");
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            .await
            .expect("write");
        h.wait_concurrency("ns/app", 1).await;
        h.shutdown();
        let head = read_head(&mut client).await.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 503"), "{head}");
        assert!(head.contains("retry-after: 1"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_request_arriving_during_the_shutdown_delay_is_held_and_served() {
    bounded(async {
        let mut h = Harness::start(|config| {
            config.shutdown_delay = Duration::from_secs(2);
        })
        .await;
        let (addr, complete) = counting_backend().await;
        h.set_endpoints("ns", "app", 80, http1(&[]));
        h.install(vec![route("ns", "app", &["app"], &[])]).await;
        h.shutdown();
        h.wait_phase(keda_http_interceptor::Phase::Draining).await;
        let url = h.proxy_url("/");
        let request = tokio::spawn(async move { get(&url, "app").await });
        h.wait_concurrency("ns/app", 1).await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        let (status, headers, _) = request.await.expect("joined");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[http::header::CONNECTION], "close");
        assert_eq!(complete.load(Ordering::SeqCst), 1);
        h.stop().await;
    })
    .await;
}
