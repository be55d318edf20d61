//! Why a request was answered by the interceptor itself. The status code and body of each
//! reason are in [`respond`](super::respond) ([`ProxyError::status`]).

/// A request the interceptor answers itself instead of (or after failing at) forwarding.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the host, path and headers (also absolute-form request targets).
    #[error("no route matches the request")]
    NoRoute,
    /// The request is malformed in a way hyper let through (e.g. an invalid Host).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Reading the client's request body failed (bad chunked framing, a body cut short).
    #[error("malformed or incomplete request body")]
    ClientBody,
    /// Shutdown reached its drain deadline while the request was held for a cold start.
    #[error("shutting down")]
    ShuttingDown,
    /// `CONNECT`: the interceptor is not a forward proxy.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The target has no ready endpoint.
    #[error("no ready endpoint for {0}")]
    NoReadyEndpoint(String),
    /// Every connect attempt failed; the last failure was not a timeout.
    #[error("connect to upstream failed: {0}")]
    Connect(#[source] BoxError),
    /// Every connect attempt failed; the last one timed out.
    #[error("connect to upstream timed out")]
    ConnectTimeout,
    /// No response headers within the response-header timeout.
    #[error("upstream response headers timed out")]
    ResponseHeaderTimeout,
    /// The request deadline passed before the response headers arrived.
    #[error("request deadline exceeded")]
    RequestTimeout,
    /// The upstream exchange failed after connecting.
    #[error("upstream request failed: {0}")]
    Upstream(#[source] BoxError),
    /// The target's (or fallback's) Service has no port of that name or number.
    #[error("no such port on the Service of {0}")]
    UnknownPort(String),
    /// The target did not become ready within the readiness timeout or request deadline.
    #[error("target not ready in time")]
    ColdStartTimeout,
    /// The cold-start hold queue (per route or per interceptor) is full.
    #[error("cold-start hold queue full")]
    HoldQueueFull,
}

/// A boxed error at the client seam.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
