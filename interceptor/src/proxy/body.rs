//! Body types of the proxy: what the client receives ([`ProxyBody`]) and what the upstream
//! receives ([`UpstreamBody`]), plus the per-request [`Completion`] that counts and measures.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::metrics::{MethodLabel, Metrics, RouteMetrics};
use crate::queue::InFlight;

/// Status recorded for a request whose client went away before a response was produced.
pub const CLIENT_CLOSED: u16 = 499;

/// The end of one request: when dropped it releases the in-flight count (if the request was
/// counted) and records the request's count and duration metrics.
#[derive(Debug)]
pub struct Completion {
    metrics: Arc<Metrics>,
    start: Instant,
    method: MethodLabel,
    code: u16,
    cold_start: bool,
    route: Option<Arc<RouteMetrics>>,
    in_flight: Option<InFlight>,
    access: Option<Box<AccessLog>>,
}

/// What the access log needs (captured only when `KEDA_HTTP_LOG_REQUESTS` is on).
#[derive(Debug)]
struct AccessLog {
    remote: std::net::IpAddr,
    time: String,
    method: String,
    uri: String,
    version: http::Version,
    referer: String,
    user_agent: String,
    bytes: u64,
}

impl Completion {
    /// Starts measuring a request.
    pub fn start(metrics: Arc<Metrics>, method: MethodLabel) -> Self {
        Self {
            metrics,
            start: Instant::now(),
            method,
            code: CLIENT_CLOSED,
            cold_start: false,
            route: None,
            in_flight: None,
            access: None,
        }
    }

    /// Writes a Combined Log Format line for this request when it completes.
    pub fn log_access<B>(&mut self, req: &http::Request<B>, remote: std::net::IpAddr) {
        let header = |name: http::header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        self.access = Some(Box::new(AccessLog {
            remote,
            time: k8s_openapi::jiff::Zoned::now()
                .strftime("%d/%b/%Y:%H:%M:%S %z")
                .to_string(),
            method: req.method().to_string(),
            uri: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().to_string(), ToString::to_string),
            version: req.version(),
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            bytes: 0,
        }));
    }

    fn add_bytes(&mut self, n: usize) {
        if let Some(access) = &mut self.access {
            access.bytes += n as u64;
        }
    }

    /// Attributes the request to a route (labels only; not counted).
    pub fn set_route(&mut self, route: &Arc<RouteMetrics>) {
        self.route = Some(Arc::clone(route));
    }

    /// Counts the request against its route until this completion is dropped.
    pub fn count(&mut self, in_flight: InFlight) {
        self.metrics.concurrency(self.route.as_deref(), 1);
        self.in_flight = Some(in_flight);
    }

    /// The status code to record.
    pub fn set_code(&mut self, code: u16) {
        self.code = code;
    }

    /// The request waited for its target to scale from zero (the `cold_start` label).
    pub fn set_cold_start(&mut self, cold_start: bool) {
        self.cold_start = cold_start;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.in_flight.take().is_some() {
            self.metrics.concurrency(self.route.as_deref(), -1);
        }
        if let Some(a) = self.access.take() {
            tracing::info!(
                target: "access",
                "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\"",
                a.remote,
                a.time,
                a.method,
                a.uri,
                a.version,
                self.code,
                a.bytes,
                a.referer,
                a.user_agent
            );
        }
        self.metrics.record(
            self.route.as_deref(),
            self.code,
            self.method,
            self.cold_start,
            self.start.elapsed().as_secs_f64(),
        );
    }
}

/// The response body sent to the client.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    completion: Option<Completion>,
    /// The request deadline, if one applies (only allocated when configured).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The request deadline passed while the response body was streaming.
#[derive(Debug, thiserror::Error)]
#[error("request deadline exceeded while streaming the response")]
pub struct DeadlineExceeded;

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Upstream(Incoming),
}

impl ProxyBody {
    /// A complete body.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            completion: None,
            deadline: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// The upstream's response body, streamed through.
    pub fn upstream(body: Incoming) -> Self {
        Self {
            kind: Kind::Upstream(body),
            completion: None,
            deadline: None,
        }
    }

    /// Ends the body with an error if it is still streaming at `deadline`.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
        self
    }

    /// Keeps `completion` alive until this body has ended or is dropped.
    pub fn with_completion(mut self, completion: Completion) -> Self {
        self.completion = Some(completion);
        self
    }
}

/// Errors of [`ProxyBody`].
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.deadline = None;
            this.completion = None;
            this.kind = Kind::Full(None);
            return Poll::Ready(Some(Err(Box::new(DeadlineExceeded))));
        }
        let polled = match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| Box::new(e) as BodyError))),
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(completion)) = (&polled, &mut this.completion)
            && let Some(data) = frame.data_ref()
        {
            completion.add_bytes(data.len());
        }
        match &polled {
            Poll::Ready(None | Some(Err(_))) => this.completion = None,
            Poll::Ready(Some(Ok(_))) if this.is_end_stream() => this.completion = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body) => body.size_hint(),
        }
    }
}

/// Set when reading the client's request body failed (bad chunk size, chunk extensions over
/// hyper's bound, a body cut short): the failure of the upstream exchange is the client's,
/// answered 400 and not counted as an upstream failure. The upstream connection the body was
/// being written to is closed by the client (a half-written request is never pooled).
#[derive(Debug, Clone, Default)]
pub struct ClientFault(Arc<std::sync::atomic::AtomicBool>);

impl ClientFault {
    /// Whether the client's body failed.
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The request body sent upstream: the client's body, handed back through a oneshot channel
/// if the upstream client drops it before polling it (a failed connect), so the request can
/// be retried on another endpoint without buffering anything.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Option<Incoming>,
    reclaim: Option<oneshot::Sender<Incoming>>,
    fault: ClientFault,
}

impl UpstreamBody {
    /// Wraps `body`; if it is dropped unpolled, it is sent to the returned receiver. A read
    /// error of the client's body sets `fault`.
    pub fn reclaimable(body: Incoming, fault: ClientFault) -> (Self, oneshot::Receiver<Incoming>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                inner: Some(body),
                reclaim: Some(tx),
                fault,
            },
            rx,
        )
    }

    /// Wraps `body` without a way back; a read error of the client's body sets `fault`.
    pub fn once(body: Incoming, fault: ClientFault) -> Self {
        Self {
            inner: Some(body),
            reclaim: None,
            fault,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // Once polled, bytes may have been sent: the body can no longer be reclaimed.
        this.reclaim = None;
        match &mut this.inner {
            Some(body) => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Err(_))) = &polled {
                    this.fault.set();
                }
                polled
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let (Some(tx), Some(body)) = (self.reclaim.take(), self.inner.take()) {
            let _ = tx.send(body);
        }
    }
}
