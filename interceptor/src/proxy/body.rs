//! Body types of the proxy: what the client receives ([`ProxyBody`]) and what the upstream
//! receives ([`UpstreamBody`]), plus the per-request [`Completion`] that counts and measures.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::metrics::{Metrics, RouteLabels};
use crate::queue::InFlight;

/// Status recorded for a request whose client went away before a response was produced.
pub const CLIENT_CLOSED: u16 = 499;

/// The end of one request: when dropped it releases the in-flight count (if the request was
/// counted) and records the request's count and duration metrics.
#[derive(Debug)]
pub struct Completion {
    metrics: Arc<Metrics>,
    start: Instant,
    method: &'static str,
    code: u16,
    route: RouteLabels,
    in_flight: Option<InFlight>,
}

impl Completion {
    /// Starts measuring a request.
    pub fn start(metrics: Arc<Metrics>, method: &'static str) -> Self {
        Self {
            metrics,
            start: Instant::now(),
            method,
            code: CLIENT_CLOSED,
            route: RouteLabels::default(),
            in_flight: None,
        }
    }

    /// Attributes the request to a route (labels only; not counted).
    pub fn set_route(&mut self, route: RouteLabels) {
        self.route = route;
    }

    /// Counts the request against its route until this completion is dropped.
    pub fn count(&mut self, in_flight: InFlight) {
        self.metrics.concurrency(&self.route, 1);
        self.in_flight = Some(in_flight);
    }

    /// The status code to record.
    pub fn set_code(&mut self, code: u16) {
        self.code = code;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.in_flight.take().is_some() {
            self.metrics.concurrency(&self.route, -1);
        }
        let route = std::mem::take(&mut self.route);
        self.metrics.record(
            self.code,
            self.method,
            route,
            self.start.elapsed().as_secs_f64(),
        );
    }
}

/// The response body sent to the client.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    completion: Option<Completion>,
}

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
        }
    }

    /// Keeps `completion` alive until this body has ended or is dropped.
    pub fn with_completion(mut self, completion: Completion) -> Self {
        self.completion = Some(completion);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
        };
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

/// The request body sent upstream: the client's body, handed back through a oneshot channel
/// if the upstream client drops it before polling it (a failed connect), so the request can
/// be retried on another endpoint without buffering anything.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Option<Incoming>,
    reclaim: Option<oneshot::Sender<Incoming>>,
}

impl UpstreamBody {
    /// Wraps `body`; if it is dropped unpolled, it is sent to the returned receiver.
    pub fn reclaimable(body: Incoming) -> (Self, oneshot::Receiver<Incoming>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                inner: Some(body),
                reclaim: Some(tx),
            },
            rx,
        )
    }

    /// Wraps `body` without a way back.
    pub fn once(body: Incoming) -> Self {
        Self {
            inner: Some(body),
            reclaim: None,
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
            Some(body) => Pin::new(body).poll_frame(cx),
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
