//! The HTTP server: accept loop, request handling, and graceful shutdown.
//!
//! [`Server::bind`] binds the listener (so callers learn the port before serving), and
//! [`Server::run`] serves until the given shutdown future completes. Then it stops accepting,
//! asks every connection to finish its in-flight requests, and waits for them up to the drain
//! timeout. [`Readiness::set`] turns `/healthz` to 503 without stopping anything, for the
//! shutdown delay that [`serve_until_signal`] applies between SIGTERM and closing the listener.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;

/// The hello text, exactly as the seed's Flask app answered.
pub const HELLO: &str = "Hello, Kubernetes with KEDA!";

/// Response header carrying the artificial delay actually applied, in milliseconds.
pub const DELAY_HEADER: &str = "x-hello-delay-ms";

/// Number of events `/sse` sends, and the gap between them.
pub const SSE_EVENTS: u32 = 5;
const SSE_GAP: Duration = Duration::from_millis(100);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address we tried.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The bound listener has no local address (should not happen).
    #[error("local address: {0}")]
    LocalAddr(#[source] std::io::Error),
}

/// What the server is doing, published on a watch channel so tests and callers can wait on
/// state changes instead of sleeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// `/healthz` answers 200 (false from SIGTERM on, while the shutdown delay runs).
    pub ready: bool,
    /// Still accepting new connections (false once shutdown has begun).
    pub accepting: bool,
    /// Requests whose response head has not been produced yet (delayed requests count here).
    pub in_flight: usize,
}

/// A bound hello server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    settings: Arc<Config>,
    state: watch::Sender<State>,
}

impl Server {
    /// Binds the listener described by `config`.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let addr = config.socket_addr();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(Error::LocalAddr)?;
        let (state, _) = watch::channel(State {
            ready: true,
            accepting: true,
            in_flight: 0,
        });
        Ok(Self {
            listener,
            local_addr,
            settings: Arc::new(config.clone()),
            state,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A receiver of [`State`] changes.
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    /// A handle that flips what `/healthz` reports.
    pub fn readiness(&self) -> Readiness {
        Readiness(self.state.clone())
    }

    /// Serves until `shutdown` completes, then drains in-flight requests (bounded by the drain
    /// timeout) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Server {
            listener,
            settings,
            state,
            ..
        } = self;
        let state = Arc::new(state);
        let builder = auto::Builder::new(TokioExecutor::new());
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);

        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        // Usually EMFILE/ENFILE: back off briefly instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let settings = Arc::clone(&settings);
            let state = Arc::clone(&state);
            let service = service_fn(move |req| {
                let settings = Arc::clone(&settings);
                let ready = state.borrow().ready;
                let guard = InFlight::enter(Arc::clone(&state));
                async move {
                    let response = handle(&settings, ready, req).await;
                    drop(guard);
                    Ok::<_, Infallible>(response)
                }
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
        }

        drop(listener);
        state.send_modify(|s| s.accepting = false);
        let open = graceful.count();
        tracing::info!(
            open_connections = open,
            "shutting down: draining in-flight requests"
        );
        let drain = settings.drain_timeout();
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_ms = settings.drain_timeout_ms,
                "drain timeout reached; dropping remaining connections"
            );
        }
        Ok(())
    }
}

/// Sets whether `/healthz` reports ready.
#[derive(Clone)]
pub struct Readiness(watch::Sender<State>);

impl Readiness {
    /// `false`: `/healthz` answers 503 while everything else keeps being served.
    pub fn set(&self, ready: bool) {
        self.0.send_modify(|s| s.ready = ready);
    }
}

/// Serves until SIGTERM or Ctrl-C; then reports not-ready and keeps serving for
/// `shutdown_delay` (so load balancers and the interceptor, which learn about the terminating
/// pod asynchronously, stop sending to it), then drains and returns.
pub async fn serve_until_signal(server: Server, shutdown_delay: Duration) -> Result<(), Error> {
    let readiness = server.readiness();
    server
        .run(async move {
            shutdown_signal().await;
            readiness.set(false);
            if !shutdown_delay.is_zero() {
                tracing::info!(
                    delay_ms = shutdown_delay.as_millis(),
                    "not ready; still serving during the shutdown delay"
                );
                tokio::time::sleep(shutdown_delay).await;
            }
        })
        .await
}

/// Counts one request in [`State::in_flight`] for as long as it lives.
struct InFlight(Arc<watch::Sender<State>>);

impl InFlight {
    fn enter(state: Arc<watch::Sender<State>>) -> Self {
        state.send_modify(|s| s.in_flight += 1);
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .send_modify(|s| s.in_flight = s.in_flight.saturating_sub(1));
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    keda_http_runtime::signal::shutdown().await;
    tracing::info!("shutdown signal received");
}

async fn handle(settings: &Config, ready: bool, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/healthz" if ready => text(StatusCode::OK, "ok"),
        "/healthz" => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        "/echo" => echo(req),
        "/sse" => sse(),
        _ => hello(settings, &req).await,
    }
}

async fn hello(settings: &Config, req: &Request<Incoming>) -> Response<Body> {
    let requested = match delay_query(req.uri().query()) {
        Ok(requested) => requested,
        Err(bad) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("delay_ms must be a whole number of milliseconds, got {bad:?}"),
            );
        }
    };
    let delay_ms = settings.effective_delay_ms(requested);
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let mut response = if req.method() == Method::HEAD {
        Response::new(empty())
    } else {
        text(StatusCode::OK, HELLO)
    };
    response
        .headers_mut()
        .insert(DELAY_HEADER, HeaderValue::from(delay_ms));
    response
}

/// The `delay_ms` query parameter: `Ok(None)` when absent, `Err(value)` when not a number.
fn delay_query(query: Option<&str>) -> Result<Option<u64>, String> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("delay_ms=") {
            return value.parse().map(Some).map_err(|_| value.to_owned());
        }
    }
    Ok(None)
}

fn echo(req: Request<Incoming>) -> Response<Body> {
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let body = req.into_body().map_err(BoxError::from).boxed();
    let mut response = Response::new(body);
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

fn sse() -> Response<Body> {
    let events = futures::stream::unfold(0u32, |n| async move {
        if n >= SSE_EVENTS {
            return None;
        }
        if n > 0 {
            tokio::time::sleep(SSE_GAP).await;
        }
        let frame = Frame::data(Bytes::from(format!("id: {n}\ndata: {HELLO} #{n}\n\n")));
        Some((Ok::<_, BoxError>(frame), n + 1))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(events)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_query_parses_absent_present_and_bad() {
        assert_eq!(delay_query(None), Ok(None));
        assert_eq!(delay_query(Some("a=1")), Ok(None));
        assert_eq!(delay_query(Some("a=1&delay_ms=250")), Ok(Some(250)));
        assert_eq!(delay_query(Some("delay_ms=x")), Err("x".to_owned()));
        assert_eq!(delay_query(Some("delay_ms=-1")), Err("-1".to_owned()));
    }
}
