//! Accept loops: HTTP/1.1 and h2c (prior knowledge) on one port, or HTTP/1.1 and h2 over TLS, with header-read timeout and
//! header size limits, and two-step shutdown (graceful, then hard).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::framing::{AmbiguousFraming, ConnFraming, SniffIo};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Bound on a client's TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors binding a listener.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr` and returns the listener with its actual address.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client may take to send a request's header section (HTTP/1).
    pub header_read_timeout: Duration,
    /// Largest header section, in bytes (HTTP/1 read buffer; h2 header list size).
    pub max_header_bytes: usize,
}

/// The connection builder: HTTP/1.1 and h2c prior knowledge.
pub fn builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(256);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serves connections from `listener` with `handler` until `stop` is cancelled, then stops
/// accepting, asks each connection to finish (HTTP/1: close after the in-flight response;
/// h2: GOAWAY) and returns when all have closed or `hard_stop` is cancelled (which drops
/// the remaining connections).
pub async fn serve<H, Fut, B>(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    handler: H,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (builder, handler, stop, hard_stop) = (
            builder.clone(),
            handler.clone(),
            stop.clone(),
            hard_stop.clone(),
        );
        match tls.clone() {
            None => {
                connections.spawn(connection(stream, peer, builder, handler, stop, hard_stop));
            }
            Some(acceptor) => {
                connections.spawn(async move {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = tokio::select! {
                        accepted = handshake => match accepted {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        },
                        () = stop.cancelled() => return,
                    };
                    connection(stream, peer, builder, handler, stop, hard_stop).await;
                });
            }
        }
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => {}
        () = hard_stop.cancelled() => {}
    }
}

async fn connection<I, H, Fut, B>(
    stream: I,
    peer: SocketAddr,
    builder: auto::Builder<TokioExecutor>,
    handler: H,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let framing = Arc::new(ConnFraming::default());
    let io = SniffIo::new(stream, Arc::clone(&framing));
    let service = service_fn(move |mut req: Request<Incoming>| {
        if framing.next_request_is_ambiguous() {
            req.extensions_mut().insert(AmbiguousFraming);
        }
        let response = handler(req, peer);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            return;
        }
        () = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        () = hard_stop.cancelled() => {}
    }
}
