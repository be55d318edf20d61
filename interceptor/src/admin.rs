//! The admin port: `/queue` (compat §4.2, byte-exact), `/queue/watch` (our push stream,
//! see [`keda_http_api::queue`]), `/readyz`, `/livez` and `GET /routes`; and the metrics
//! port's `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use keda_http_api::queue::{
    QUEUE_PATH, QUEUE_WATCH_CONTENT_TYPE, QUEUE_WATCH_PATH, WATCH_COALESCE,
};
use prometheus_client::registry::Registry;

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

    /// `/queue/watch`: a snapshot line now, then one per quiet↔active change (at most one per
    /// [`WATCH_COALESCE`]), and a heartbeat line every [`WATCH_HEARTBEAT`] otherwise.
    fn watch(&self) -> Response<AdminBody> {
        let queue = Arc::clone(&self.queue);
        let mut changes = queue.changes();
        changes.borrow_and_update();
        let stream = futures::stream::unfold(
            (queue, changes, true),
            |(queue, mut changes, first)| async move {
                if !first {
                    tokio::time::sleep(WATCH_COALESCE).await;
                    tokio::select! {
                        changed = changes.changed() => if changed.is_err() { return None },
                        () = tokio::time::sleep(WATCH_HEARTBEAT) => {}
                    }
                    changes.borrow_and_update();
                }
                let line = Bytes::from(queue.snapshot().to_body());
                Some((
                    Ok::<_, Infallible>(Frame::data(line)),
                    (queue, changes, false),
                ))
            },
        );
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
