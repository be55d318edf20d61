//! One accept loop for every HTTP listener: bind, accept, serve each connection with
//! hyper-util's auto builder (HTTP/1.1 and h2 / h2c prior knowledge), optionally behind TLS,
//! with two-step shutdown: `stop` closes the listener and asks each connection to finish
//! (HTTP/1: close after the in-flight response; h2: GOAWAY), `hard_stop` drops the rest.
//!
//! [`serve`] takes a request handler; [`serve_connections`] takes a per-connection hook that
//! may wrap the stream and build its own service (the interceptor sniffs framing that way).
//!
//! A hook whose I/O can tell when it is between requests ([`Park::PARKS`]) gets idle
//! keep-alive connections parked: plain HTTP/1.1 connections are served by hyper's HTTP/1
//! connection directly, and whenever one is idle its hyper state (read and write buffers,
//! dispatcher) is dropped until the next byte arrives (see `serve/park.rs`).

mod park;

pub use park::Park;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
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
        source: io::Error,
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

impl Default for Limits {
    /// hyper's usual sizes: 30 s to send headers, 64 KiB of them.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// How connections are served: hyper-util's auto builder (HTTP/1.1 and h2, h2c prior
/// knowledge on plain listeners) and, for connections that park, hyper's HTTP/1 builder with
/// the same settings.
#[derive(Clone, Debug)]
pub struct Builder {
    auto: auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
    limits: Limits,
}

/// The connection builder for `limits`.
pub fn builder(limits: Limits) -> Builder {
    let max_buf_size = limits.max_header_bytes.max(8192);
    let mut auto = auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(max_buf_size)
        .max_headers(256);
    auto.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(max_buf_size)
        .max_headers(256);
    Builder {
        auto,
        http1,
        limits,
    }
}

/// An accepted connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, after a completed handshake.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Waits until the socket has something to read (bytes, end of stream or an error).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Plain(s) => s.poll_read_ready(cx),
            Self::Tls(s) => s.get_ref().0.poll_read_ready(cx),
        }
    }
}

impl Park for Stream {
    const PARKS: bool = false;

    fn between_requests(&self) -> bool {
        false
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Stream::poll_read_ready(self, cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Serves connections from `listener` with `handler` (called with each request and the
/// client's address) until `stop` is cancelled, then stops accepting, asks each connection to
/// finish and returns when all have closed or `hard_stop` is cancelled.
pub async fn serve<H, Fut, B>(
    listener: TcpListener,
    builder: Builder,
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
    let connect = move |stream: Stream, peer: SocketAddr| {
        let handler = handler.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let response = handler(req, peer);
            async move { Ok::<_, Infallible>(response.await) }
        });
        (stream, service)
    };
    serve_connections(listener, builder, tls, connect, stop, hard_stop).await;
}

/// Like [`serve`], but `connect` receives each accepted stream (after the TLS handshake)
/// and returns the I/O to serve and the hyper service for that connection.
pub async fn serve_connections<C, Io, S, B>(
    listener: TcpListener,
    builder: Builder,
    tls: Option<TlsAcceptor>,
    connect: C,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) where
    C: Fn(Stream, SocketAddr) -> (Io, S) + Clone + Send + Sync + 'static,
    Io: Park + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
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
        let (builder, connect, stop, hard_stop) = (
            builder.clone(),
            connect.clone(),
            stop.clone(),
            hard_stop.clone(),
        );
        let tls = tls.clone();
        connections.spawn(async move {
            let stream = match tls {
                None => Stream::Plain(stream),
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    tokio::select! {
                        accepted = handshake => match accepted {
                            Ok(Ok(stream)) => Stream::Tls(Box::new(stream)),
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
                    }
                }
            };
            let http1 = match &stream {
                Stream::Plain(tcp) if Io::PARKS => {
                    match park::first_bytes(tcp, builder.limits.header_read_timeout, &stop).await {
                        park::FirstBytes::Http1 => true,
                        park::FirstBytes::Other => false,
                        park::FirstBytes::Nothing => return,
                    }
                }
                _ => false,
            };
            let (io, service) = connect(stream, peer);
            if http1 {
                park::serve_http1(io, peer, &builder, service, stop, hard_stop).await;
            } else {
                connection(io, peer, &builder, service, stop, hard_stop).await;
            }
        });
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => {}
        () = hard_stop.cancelled() => {}
    }
}

async fn connection<Io, S, B>(
    io: Io,
    peer: SocketAddr,
    builder: &Builder,
    service: S,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Boxed: the task then stores a pointer, not hyper's connection state, so a connection
    // that parks (served by park::serve_http1 in the same task type) stays small.
    let mut conn = Box::pin(
        builder
            .auto
            .serve_connection_with_upgrades(TokioIo::new(io), service),
    );
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
