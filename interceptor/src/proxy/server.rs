//! Accept loops of the interceptor: HTTP/1.1 and h2c (prior knowledge) on one port, or
//! HTTP/1.1 and h2 over TLS, with header-read timeout, header size limits and two-step
//! shutdown (graceful, then hard).
//!
//! The loop itself is `keda_http_runtime::serve`; this module adds what only a proxy needs:
//! each connection's bytes are sniffed for ambiguous HTTP/1 framing, and a request read after
//! such framing carries the [`AmbiguousFraming`] extension.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use keda_http_runtime::serve::{Stream, serve_connections};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::framing::{AmbiguousFraming, ConnFraming, SniffIo};

pub use keda_http_runtime::serve::{
    Builder, Limits, ServerError, TLS_HANDSHAKE_TIMEOUT, bind, builder,
};

/// Serves connections from `listener` with `handler` until `stop` is cancelled, then stops
/// accepting, asks each connection to finish (HTTP/1: close after the in-flight response;
/// h2: GOAWAY) and returns when all have closed or `hard_stop` is cancelled (which drops
/// the remaining connections).
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
        let framing = Arc::new(ConnFraming::default());
        let io = SniffIo::new(stream, Arc::clone(&framing));
        let handler = handler.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            if framing.next_request_is_ambiguous() {
                req.extensions_mut().insert(AmbiguousFraming);
            }
            let response = handler(req, peer);
            async move { Ok::<_, Infallible>(response.await) }
        });
        (io, service)
    };
    serve_connections(listener, builder, tls, connect, stop, hard_stop).await;
}
