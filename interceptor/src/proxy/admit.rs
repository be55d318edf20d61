//! The `admit` phase: counting and cold start (compat §1.3 layers 6–8, §6.2). A counted
//! request takes its route's in-flight guard; if the target has no ready endpoint it gets the
//! placeholder, a 503 when the hold queue is full, or a bounded hold on the target's ready
//! channel ([`crate::coldstart`]) followed by the fallback or a 504. The result is the pool to
//! forward to and the request's deadlines.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri};
use tokio::time::Instant;

use super::body::{Completion, ProxyBody};
use super::error::ProxyError;
use super::{Proxy, respond};
use crate::coldstart::{self, Admission, Hold};
use crate::endpoints::{Pool, PortLookup};
use crate::metrics::RouteLabels;
use crate::routing::Route;
use crate::telemetry::RequestTrace;

/// What the admit phase decided.
pub(super) enum Admit<'r> {
    /// Forward.
    Forward(Admitted<'r>),
    /// The placeholder answered.
    Answered(http::Response<ProxyBody>),
}

/// A request cleared to forward.
pub(super) struct Admitted<'r> {
    /// The pool to forward to: the target's, or the fallback's after a cold-start timeout.
    pub(super) pool: &'r Pool,
    /// `Some(waited)` when the request is counted and goes to its own target.
    pub(super) cold_start: Option<bool>,
    /// The request deadline (route `timeouts.request`, else the interceptor's; none if zero).
    pub(super) deadline: Option<Instant>,
    /// The response-header timeout of one attempt (zero: none).
    pub(super) response_header_timeout: Duration,
    /// The route's metric labels (connect retries are counted on them).
    pub(super) labels: &'r RouteLabels,
}

impl Proxy {
    /// Counts the request (unless it is an uncounted static-route forward) and waits for the
    /// target to be ready if it is cold; a request about to be held first gets its head and
    /// `host` (the Host value kept for forwarding) copied out of hyper's read buffer.
    pub(super) async fn admit<'r, B>(
        &self,
        route: &'r Route,
        counted: bool,
        req: &mut Request<B>,
        host: &mut HeaderValue,
        completion: &mut Completion,
    ) -> Result<Admit<'r>, ProxyError> {
        if counted {
            completion.count(route.counters.enter());
        }
        let (deadline, response_header_timeout) = self.deadlines(route);
        let admitted = |pool: &'r Pool, cold_start| {
            Admit::Forward(Admitted {
                pool,
                cold_start,
                deadline,
                response_header_timeout,
                labels: route.metrics.labels(),
            })
        };
        let pool: &'r Pool = &route.pool;
        if !counted {
            return Ok(admitted(pool, None));
        }
        if pool.current().service_port == PortLookup::Missing {
            return Err(ProxyError::UnknownPort(route.target.to_string()));
        }
        if pool.has_ready() {
            return Ok(admitted(pool, Some(false)));
        }
        let trace = self.tracer.as_ref().and_then(|_| RequestTrace::of(req));
        match self.cold.admit(route) {
            Admission::Placeholder(placeholder) => {
                if let Some(trace) = trace {
                    trace.cold_start_answered("placeholder");
                }
                Ok(Admit::Answered(self.answer(
                    placeholder,
                    respond::Kind::Placeholder,
                    route,
                    &*req,
                )))
            }
            Admission::Reject => {
                if let Some(trace) = trace {
                    trace.cold_start_answered("overflow");
                }
                Err(ProxyError::HoldQueueFull)
            }
            Admission::Hold(hold) => {
                let span = trace.map(RequestTrace::cold_start);
                compact_head(req, host);
                // Boxed: only a cold request pays for the hold's timers and wakers.
                let held = Box::pin(self.hold(route, hold, deadline)).await;
                if let Some(span) = span {
                    span.end_hold(&held);
                }
                let (pool, cold_start) = held?;
                Ok(admitted(pool, cold_start))
            }
        }
    }

    /// The request deadline and the response-header timeout: the route's, else the defaults.
    fn deadlines(&self, route: &Route) -> (Option<Instant>, Duration) {
        let timeouts = route.source.spec.timeouts.as_ref();
        let request_timeout = timeouts
            .and_then(|t| t.request)
            .map_or(self.settings.request_timeout, |d| d.as_duration());
        let response_header_timeout = timeouts
            .and_then(|t| t.response_header)
            .map_or(self.settings.response_header_timeout, |d| d.as_duration());
        let deadline = (!request_timeout.is_zero()).then(|| Instant::now() + request_timeout);
        (deadline, response_header_timeout)
    }

    /// Holds a cold request until its target is ready (→ the target, waited) or the
    /// readiness timeout / deadline passes (→ the fallback, else 504), or shutdown reaches its
    /// drain deadline (→ 503 with `Retry-After` and `Connection: close`).
    async fn hold<'r>(
        &self,
        route: &'r Route,
        hold: Hold,
        deadline: Option<Instant>,
    ) -> Result<(&'r Pool, Option<bool>), ProxyError> {
        let readiness = self.cold.readiness_timeout(&route.source.spec);
        let until = coldstart::earliest(
            deadline,
            (!readiness.is_zero()).then(|| Instant::now() + readiness),
        );
        let released = self.lifecycle.release_held_signal();
        let ready = tokio::select! {
            ready = coldstart::wait_ready(&route.pool, until) => ready,
            () = released.cancelled() => return Err(ProxyError::ShuttingDown),
        };
        drop(hold);
        if ready {
            return Ok((&route.pool, Some(true)));
        }
        let Some(fallback) = &route.fallback else {
            return Err(ProxyError::ColdStartTimeout);
        };
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(ProxyError::RequestTimeout);
        }
        if fallback.current().service_port == PortLookup::Missing {
            return Err(ProxyError::UnknownPort(fallback.target().to_string()));
        }
        Ok((fallback.as_ref(), None))
    }
}

/// Copies a held request's head (target, header fields, the Host value kept for forwarding)
/// out of hyper's read buffer. hyper hands them out as slices of that buffer, so without the
/// copy each held request keeps a whole read buffer (8 KiB or more) alive for as long as it
/// waits; only cold requests pay for the copy. A value that cannot be copied (none can: they
/// were valid when parsed) is kept as it was.
fn compact_head<B>(req: &mut Request<B>, host: &mut HeaderValue) {
    if let Ok(uri) = Uri::from_maybe_shared(Bytes::from(req.uri().to_string())) {
        *req.uri_mut() = uri;
    }
    let mut headers = HeaderMap::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        headers.append(name, copy_value(value));
    }
    *req.headers_mut() = headers;
    *host = copy_value(host);
}

fn copy_value(value: &HeaderValue) -> HeaderValue {
    match HeaderValue::from_bytes(value.as_bytes()) {
        Ok(mut copy) => {
            copy.set_sensitive(value.is_sensitive());
            copy
        }
        Err(_) => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_head_is_the_same_request() {
        let mut req = Request::builder()
            .uri("/a/b?c=d")
            .header("host", "app.example.com")
            .header("x-custom", "one")
            .header("x-custom", "two")
            .header("authorization", "secret")
            .body(())
            .expect("request");
        req.headers_mut()
            .get_mut("authorization")
            .expect("set")
            .set_sensitive(true);
        let before = req.headers().clone();
        let mut host = HeaderValue::from_static("app.example.com");
        compact_head(&mut req, &mut host);
        assert_eq!(req.uri(), "/a/b?c=d");
        assert_eq!(req.headers(), &before);
        let custom: Vec<_> = req.headers().get_all("x-custom").iter().collect();
        assert_eq!(custom, ["one", "two"], "repeated fields keep their order");
        assert!(req.headers()["authorization"].is_sensitive());
        assert_eq!(host, "app.example.com");
    }
}
