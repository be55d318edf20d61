//! Malformed and hostile requests: each answered by the interceptor, nothing forwarded.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A catch-all route to a backend that counts what reaches it.
async fn setup(
    configure: impl FnOnce(&mut keda_http_interceptor::Config),
) -> (Harness, Arc<AtomicUsize>) {
    let h = Harness::start(configure).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = backend(move |_req| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Response::new(full("forwarded"))
        }
    })
    .await;
    h.set_endpoints("ns", "app", 80, http1(&[addr]));
    h.install(vec![
        route("ns", "app", &[], &[]),
        route("ns", "named", &["known.example.com"], &[]),
    ])
    .await;
    (h, hits)
}

fn status_of(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or("<none>")
}

#[tokio::test]
async fn bad_requests_are_answered_and_never_forwarded() {
    bounded(async {
        let (h, hits) = setup(|c| c.max_header_bytes = 16 * 1024).await;
        let big = "x".repeat(32 * 1024);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("malformed request line", b"GARBAGE\r\n\r\n".to_vec(), "400"),
            (
                "malformed header line",
                b"GET / HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n".to_vec(),
                "400",
            ),
            (
                "header section over the limit",
                format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").into_bytes(),
                "431",
            ),
            (
                "Content-Length and Transfer-Encoding",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
                "400",
            ),
            (
                "conflicting Content-Lengths",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_vec(),
                "400",
            ),
            (
                "CONNECT",
                b"CONNECT known.example.com:443 HTTP/1.1\r\nHost: known.example.com:443\r\n\r\n".to_vec(),
                "405",
            ),
            (
                "absolute-form target",
                b"GET http://known.example.com/ HTTP/1.1\r\nHost: known.example.com\r\n\r\n".to_vec(),
                "404",
            ),
            (
                "missing Host on HTTP/1.1",
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                "400",
            ),
            (
                "repeated Host",
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
                "400",
            ),
            (
                "space in Host",
                b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(),
                "400",
            ),
            (
                "non-ASCII (invalid UTF-8) Host",
                b"GET / HTTP/1.1\r\nHost: \xff\xfe.example.com\r\n\r\n".to_vec(),
                "400",
            ),
            (
                "control character in Host",
                b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n".to_vec(),
                "400",
            ),
            (
                "userinfo in Host",
                b"GET / HTTP/1.1\r\nHost: user@evil.com\r\n\r\n".to_vec(),
                "400",
            ),
        ];
        for (name, request, want) in cases {
            let response = raw(h.addrs.proxy, &request).await;
            assert_eq!(status_of(&response), want, "{name}: {response:?}");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was forwarded");

        // A good request on the same setup is forwarded (the setup works).
        let response = raw(h.addrs.proxy, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status_of(&response), "200", "{response}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_hosts_are_404_without_a_catch_all() {
    bounded(async {
        let h = Harness::start(|_| {}).await;
        h.install(vec![route("ns", "named", &["known.example.com"], &[])])
            .await;
        for host in [
            "unknown.example.com",
            "known.example.com.evil.org",
            "example.com",
        ] {
            let (status, _, body) = get(&h.proxy_url("/"), host).await;
            assert_eq!(status, http::StatusCode::NOT_FOUND, "{host}");
            assert_eq!(&body[..], b"Not Found\n");
        }
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn slow_headers_are_disconnected() {
    bounded(async {
        let (h, hits) = setup(|c| c.read_header_timeout = Duration::from_millis(300)).await;
        let mut stream = tokio::net::TcpStream::connect(h.addrs.proxy)
            .await
            .expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .expect("write");
        // Never finish the header section: the interceptor must close the connection.
        let mut buf = Vec::new();
        let read = stream.read_to_end(&mut buf).await;
        assert!(
            read.is_err()
                || buf.is_empty()
                || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
            "unexpected answer {:?}",
            String::from_utf8_lossy(&buf)
        );
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        h.stop().await;
    })
    .await;
}
