//! The admin port: `/queue` (compat §4.2, byte-exact), `/queue/watch` (our push stream,
//! see [`keda_http_api::queue`]), `/readyz`, `/livez` and `GET /routes`; and the metrics
//! port's `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use keda_http_api::queue::{
    QUEUE_PATH, QUEUE_WATCH_CONTENT_TYPE, QUEUE_WATCH_PATH, WATCH_COALESCE,
};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::lifecycle::Lifecycle;
use crate::queue::Queue;
use crate::routing::RouteTableHandle;

/// Heartbeat period of `/queue/watch` when nothing changes.
pub const WATCH_HEARTBEAT: Duration = Duration::from_millis(500);

/// Body of admin responses.
pub type AdminBody = UnsyncBoxBody<Bytes, Infallible>;

/// What the admin endpoints read.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The routing table (readiness, `/routes`).
    pub routes: RouteTableHandle,
    /// The counters.
    pub queue: Arc<Queue>,
    /// The life cycle (readiness ends when shutdown begins).
    pub lifecycle: Arc<Lifecycle>,
}

impl Admin {
    /// Ready: a routing table has been installed, it has been refreshed within
    /// `KEDA_HTTP_ROUTING_TABLE_MAX_STALENESS` (compat §13) and shutdown has not begun.
    pub fn is_ready(&self) -> bool {
        self.routes.is_installed()
            && !self.lifecycle.is_draining()
            && self.lifecycle.routing_is_fresh()
    }

    /// Answers one admin request.
    pub async fn handle(self, req: Request<Incoming>) -> Response<AdminBody> {
        match req.uri().path() {
            // Any method, exact path, as the official add-on.
            QUEUE_PATH => json(StatusCode::OK, self.queue.snapshot().to_body()),
            QUEUE_WATCH_PATH => self.watch(),
            "/readyz" => {
                if self.is_ready() {
                    text(StatusCode::OK, "OK")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                }
            }
            "/livez" => text(StatusCode::OK, "OK"),
            "/routes" if req.method() == Method::GET => {
                let table = self.routes.load_full();
                let mut body = serde_json::to_vec_pretty(&table.to_json()).unwrap_or_default();
                body.push(b'\n');
                json(StatusCode::OK, body)
            }
            _ => text(StatusCode::NOT_FOUND, "404 page not found"),
        }
    }

    /// `/queue/watch`: the lines of [`watch_lines`] as a chunked body.
    fn watch(&self) -> Response<AdminBody> {
        let stream =
            watch_lines(Arc::clone(&self.queue)).map(|line| Ok::<_, Infallible>(Frame::data(line)));
        let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(QUEUE_WATCH_CONTENT_TYPE),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

/// The lines of one `/queue/watch` stream: a snapshot now; then a snapshot as soon as a route
/// goes from quiet to active; other changes (a route going quiet, routes added or removed)
/// batched so that at most one such line goes out per [`WATCH_COALESCE`]; and a heartbeat
/// snapshot [`WATCH_HEARTBEAT`] after the previous line when nothing changes.
///
/// An activation waits for nothing unless another activation line went out less than
/// [`WATCH_COALESCE`] ago, so the first request at an idle route is on the wire in the same
/// turn that counted it, and a route flapping between quiet and active still costs at most two
/// lines per [`WATCH_COALESCE`].
pub fn watch_lines(queue: Arc<Queue>) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    let mut changes = queue.changes();
    changes.borrow_and_update();
    let state = WatchState {
        activations: queue.activations(),
        queue,
        changes,
        last_line: None,
        last_activation_line: None,
    };
    futures::stream::unfold(state, |mut state| async move {
        let line = state.next_line().await?;
        Some((line, state))
    })
}

/// One `/queue/watch` stream between two lines.
struct WatchState {
    queue: Arc<Queue>,
    changes: watch::Receiver<u64>,
    /// [`Queue::activations`] when the previous line was taken.
    activations: u64,
    last_line: Option<Instant>,
    last_activation_line: Option<Instant>,
}

impl WatchState {
    /// The next line; `None` when the queue is gone.
    async fn next_line(&mut self) -> Option<Bytes> {
        if let Some(last) = self.last_line {
            tokio::select! {
                changed = self.changes.changed() => changed.ok()?,
                () = tokio::time::sleep_until(last + WATCH_HEARTBEAT) => {}
            }
            // Wait out the batching window of this kind of line; an activation arriving
            // meanwhile cuts the wait short.
            loop {
                let activation = self.queue.activations() != self.activations;
                let due = if activation {
                    self.last_activation_line.map(|t| t + WATCH_COALESCE)
                } else {
                    Some(last + WATCH_COALESCE)
                };
                let now = Instant::now();
                match due {
                    Some(due) if due > now => tokio::select! {
                        changed = self.changes.changed() => changed.ok()?,
                        () = tokio::time::sleep_until(due) => {}
                    },
                    _ => {
                        if activation {
                            self.last_activation_line = Some(now);
                        }
                        break;
                    }
                }
            }
        }
        self.changes.borrow_and_update();
        self.activations = self.queue.activations();
        self.last_line = Some(Instant::now());
        Some(Bytes::from(self.queue.snapshot().to_body()))
    }
}

/// Answers `/metrics` (anything else 404).
pub fn metrics(registry: &Registry, req: &Request<Incoming>) -> Response<AdminBody> {
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    let mut response = Response::new(full(crate::metrics::encode(registry).into_bytes()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn full(body: Vec<u8>) -> AdminBody {
    Full::new(Bytes::from(body)).boxed_unsync()
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<AdminBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: &str) -> Response<AdminBody> {
    let mut response = Response::new(full(body.as_bytes().to_vec()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;
    use keda_http_api::queue::QueueCounts;

    use super::*;

    fn concurrency(line: &Bytes, key: &str) -> i64 {
        QueueCounts::from_body(line).expect("a snapshot line").0[key].concurrency
    }

    /// Paused time: a line that is ready on the first poll waited for no timer.
    #[tokio::test(start_paused = true)]
    async fn an_activation_goes_out_at_once_and_going_quiet_is_batched() {
        let queue = Arc::new(Queue::default());
        let counters = queue.retain_keys(["a/x", "b/y"]);
        let mut lines = Box::pin(watch_lines(Arc::clone(&queue)));
        let first = lines.next().await.expect("the opening snapshot");
        assert_eq!(concurrency(&first, "a/x"), 0);

        let active = counters["a/x"].enter();
        let line = lines.next().now_or_never().flatten();
        assert_eq!(line.map(|l| concurrency(&l, "a/x")), Some(1));

        // Going quiet right after a line waits for the batching window…
        drop(active);
        assert!(lines.next().now_or_never().is_none(), "batched");
        let quiet = lines.next().await.expect("the quiet line");
        assert_eq!(concurrency(&quiet, "a/x"), 0);

        // …but the next activation, right after that line, does not.
        let _again = counters["b/y"].enter();
        let line = lines.next().now_or_never().flatten();
        assert_eq!(line.map(|l| concurrency(&l, "b/y")), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_activation_cuts_a_pending_batch_short() {
        let queue = Arc::new(Queue::default());
        let counters = queue.retain_keys(["a/x", "b/y"]);
        let mut lines = Box::pin(watch_lines(Arc::clone(&queue)));
        lines.next().await.expect("the opening snapshot");
        // A key set change right after the opening line is batched…
        queue.retain_keys(["a/x", "b/y", "c/z"]);
        assert!(lines.next().now_or_never().is_none(), "batched");
        // …until an activation arrives, which takes it along at once.
        let _active = counters["a/x"].enter();
        let line = lines.next().now_or_never().flatten().expect("sent at once");
        let counts = QueueCounts::from_body(&line).expect("a snapshot line");
        assert_eq!(counts.0["a/x"].concurrency, 1);
        assert!(counts.0.contains_key("c/z"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_sends_heartbeats() {
        let queue = Arc::new(Queue::default());
        queue.retain_keys(["a/x"]);
        let mut lines = Box::pin(watch_lines(Arc::clone(&queue)));
        lines.next().await.expect("the opening snapshot");
        assert!(lines.next().now_or_never().is_none(), "nothing changed yet");
        let beat = lines.next().await.expect("a heartbeat");
        assert_eq!(concurrency(&beat, "a/x"), 0);
    }
}
