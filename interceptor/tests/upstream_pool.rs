//! The upstream connection pool as backends see it: idle connections are reused, bounded per
//! endpoint (`KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST`) and in total over all endpoints, plain and
//! TLS together (`KEDA_HTTP_MAX_IDLE_CONNS`; beyond it the connection idle the longest is
//! closed), and a connection the backend closed is never reused.
//!
//! The backends are small hand-written HTTP/1.1 servers that count the connections they
//! accept and the ones the interceptor closed (they read end-of-stream), and can close their
//! idle connections on demand.

mod common;
mod tls_support;

use std::net::SocketAddr;

use common::*;
use http::StatusCode;
use tls_support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What a counting backend has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    /// Connections accepted.
    accepted: usize,
    /// Requests received.
    requests: usize,
    /// Connections the interceptor closed (end-of-stream read).
    closed: usize,
}

/// A backend counting connections; answers `200 ok` to every request, after `release` is
/// true for paths starting with `/hold`.
struct Backend {
    addr: SocketAddr,
    counts: watch::Receiver<Counts>,
    /// Bumped to make the backend close its idle connections (FIN; it keeps reading until
    /// the interceptor closes its side, which it counts).
    close_idle: watch::Sender<u32>,
    release: watch::Sender<bool>,
}

impl Backend {
    async fn plain() -> Self {
        Self::start(None).await
    }

    async fn tls(pki: &BackendPki) -> Self {
        Self::start(Some(pki.acceptor(&[b"http/1.1"]))).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (counts_tx, counts) = watch::channel(Counts::default());
        let (close_idle, close_rx) = watch::channel(0u32);
        let (release, release_rx) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counts_tx.send_modify(|c| c.accepted += 1);
                let counts_tx = counts_tx.clone();
                let close_rx = close_rx.clone();
                let release_rx = release_rx.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            serve(stream, counts_tx, close_rx, release_rx).await;
                        }
                        None => serve(tcp, counts_tx, close_rx, release_rx).await,
                    }
                });
            }
        });
        Self {
            addr,
            counts,
            close_idle,
            release,
        }
    }

    fn counts(&self) -> Counts {
        *self.counts.borrow()
    }

    /// Waits until the counts satisfy `ready`.
    async fn wait(&self, ready: impl FnMut(&Counts) -> bool) -> Counts {
        *self
            .counts
            .clone()
            .wait_for(ready)
            .await
            .expect("backend alive")
    }
}

/// One connection: GET requests without bodies, answered in order.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    counts: watch::Sender<Counts>,
    mut close_idle: watch::Receiver<u32>,
    mut release: watch::Receiver<bool>,
) {
    // Only requests to close made from now on concern this connection.
    close_idle.borrow_and_update();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut closing = false;
    loop {
        let read = tokio::select! {
            read = stream.read(&mut chunk) => read,
            changed = close_idle.changed(), if !closing => {
                if changed.is_ok() && buf.is_empty() {
                    closing = true;
                    let _ = stream.shutdown().await;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                counts.send_modify(|c| c.closed += 1);
                return;
            }
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            counts.send_modify(|c| c.requests += 1);
            if head.starts_with(b"GET /hold") {
                let _ = release.wait_for(|r| *r).await;
            }
            let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(response).await.is_err() {
                return;
            }
        }
    }
}

/// The interceptor with routes `a.example.com` → `ns/a` and `b.example.com` → `ns/b`.
async fn start(
    a: &Backend,
    b: &Backend,
    configure: impl FnOnce(&mut keda_http_interceptor::Config),
) -> Harness {
    let h = Harness::start(configure).await;
    h.set_endpoints("ns", "a", 80, http1(&[a.addr]));
    h.set_endpoints("ns", "b", 80, http1(&[b.addr]));
    h.install(vec![
        route("ns", "a", &["a.example.com"], &[]),
        route("ns", "b", &["b.example.com"], &[]),
    ])
    .await;
    h
}

async fn ok(h: &Harness, host: &str) {
    let (status, _, body) = get(&h.proxy_url("/"), host).await;
    assert_eq!(status, StatusCode::OK, "{host}: {body:?}");
    assert_eq!(&body[..], b"ok");
}

#[tokio::test]
async fn the_total_idle_bound_closes_the_longest_idle_connection_of_another_backend() {
    bounded(async {
        let a = Backend::plain().await;
        let b = Backend::plain().await;
        let h = start(&a, &b, |c| c.max_idle_conns = 1).await;
        ok(&h, "a.example.com").await;
        ok(&h, "b.example.com").await;
        // Parking B's connection went over the bound of one: A's, idle longer, was closed.
        a.wait(|c| c.closed == 1).await;
        // B's stayed: the next request to B reuses it.
        ok(&h, "b.example.com").await;
        assert_eq!(
            b.counts(),
            Counts {
                accepted: 1,
                requests: 2,
                closed: 0
            }
        );
        // A is dialled again.
        ok(&h, "a.example.com").await;
        assert_eq!(a.counts().accepted, 2);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn without_a_total_bound_idle_connections_to_every_backend_stay() {
    bounded(async {
        let a = Backend::plain().await;
        let b = Backend::plain().await;
        let h = start(&a, &b, |c| c.max_idle_conns = 0).await;
        for _ in 0..3 {
            ok(&h, "a.example.com").await;
            ok(&h, "b.example.com").await;
        }
        for backend in [&a, &b] {
            assert_eq!(
                backend.counts(),
                Counts {
                    accepted: 1,
                    requests: 3,
                    closed: 0
                }
            );
        }
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_per_endpoint_bound_closes_connections_beyond_it() {
    bounded(async {
        let a = Backend::plain().await;
        let b = Backend::plain().await;
        let h = start(&a, &b, |c| c.max_idle_conns_per_host = 1).await;
        // Two requests at once need two connections.
        let url = h.proxy_url("/hold");
        let first = tokio::spawn({
            let url = url.clone();
            async move { get(&url, "a.example.com").await.0 }
        });
        let second = tokio::spawn(async move { get(&url, "a.example.com").await.0 });
        a.wait(|c| c.requests == 2).await;
        a.release.send_replace(true);
        assert_eq!(first.await.expect("first"), StatusCode::OK);
        assert_eq!(second.await.expect("second"), StatusCode::OK);
        // Only one may stay idle: the other is closed, the one kept is reused.
        a.wait(|c| c.closed == 1).await;
        ok(&h, "a.example.com").await;
        ok(&h, "a.example.com").await;
        assert_eq!(
            a.counts(),
            Counts {
                accepted: 2,
                requests: 4,
                closed: 1
            }
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_connection_the_backend_closed_is_not_reused() {
    bounded(async {
        let a = Backend::plain().await;
        let b = Backend::plain().await;
        let h = start(&a, &b, |_| {}).await;
        ok(&h, "a.example.com").await;
        // The backend closes its idle connection; the interceptor closes its side in turn.
        a.close_idle.send_modify(|n| *n += 1);
        a.wait(|c| c.closed == 1).await;
        for _ in 0..3 {
            ok(&h, "a.example.com").await;
        }
        assert_eq!(a.counts().accepted, 2);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn plain_and_tls_connections_count_in_the_one_total_bound() {
    bounded(async {
        let pki = backend_pki(&["t.ns"]);
        let ca_dir = pki.ca_dirs();
        let t = Backend::tls(&pki).await;
        let a = Backend::plain().await;
        let h = start_tls_with(false, |c| {
            c.tls_ca_dirs = ca_dir;
            c.max_idle_conns = 1;
        })
        .await;
        h.set_endpoints("ns", "t", 80, http1(&[t.addr]));
        h.set_endpoints("ns", "a", 80, http1(&[a.addr]));
        h.install(vec![
            route("ns", "t", &["t.example.com"], &[]),
            route("ns", "a", &["a.example.com"], &[]),
        ])
        .await;
        // Over TLS to T (HTTP/1.1 by ALPN), reused while it is the only idle connection.
        for _ in 0..2 {
            let (status, body) = get_over_tls(&h, "t.example.com").await;
            assert_eq!(status, StatusCode::OK, "{body:?}");
        }
        assert_eq!(t.counts().accepted, 1);
        // A plain connection to A pushes the TLS one out.
        ok(&h, "a.example.com").await;
        t.wait(|c| c.closed == 1).await;
        // And the other way round.
        let (status, _) = get_over_tls(&h, "t.example.com").await;
        assert_eq!(status, StatusCode::OK);
        a.wait(|c| c.closed == 1).await;
        assert_eq!(t.counts().accepted, 2);
        h.stop().await;
    })
    .await;
}
