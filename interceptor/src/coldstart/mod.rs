//! Cold start: holding a counted request whose target has no ready endpoint, and waking it
//! (compat §1.3 layers 7, 8; §6; §13). This module only decides admission and waits; the
//! responses (placeholder, 503, 504) are made by the proxy's `respond` module and the
//! request path's admit phase chooses among them.
//!
//! - **Hold**: the request waits on the target pool's [`ready`](crate::endpoints::Pool::ready)
//!   receiver, which changes when the EndpointSlice event has been applied to the balancer, so
//!   the request is released by the event itself and forwarded at once. The wait is bounded by
//!   the readiness timeout (route `timeouts.readiness`, else `KEDA_HTTP_READINESS_TIMEOUT`;
//!   30 s when a fallback is set and the value is 0) and by the request deadline. The request
//!   is already counted, so the scaler sees the demand while it waits.
//! - **Bounds**: at most `coldStart.maxPendingRequests` held per route and
//!   `KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS` per interceptor (default
//!   [`DEFAULT_MAX_PENDING`]; 0 = unlimited). Overflow answers 503 with `Retry-After`, or the
//!   placeholder with `overflow: Placeholder`, and counts in
//!   `interceptor_cold_start_rejections_total`.
//! - **Placeholder** ([`Admission::Placeholder`]): with `coldStart.placeholder` the response is served at once while the
//!   target has no ready endpoint (counted), unless `overflow: Placeholder` and
//!   `maxPendingRequests` are both set: then requests are held up to the bound and the
//!   placeholder answers the overflow (the v0.16 behaviour).
//! - **Fallback**: when the wait times out and `coldStart.fallback` is set, the request goes to
//!   the fallback Service's ready endpoints instead (no cold-start header).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keda_http_api::interceptor_route::{InterceptorRouteSpec, Overflow, StaticResponse};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::endpoints::Pool;
use crate::metrics::RouteLabels;
use crate::routing::Route;

/// Requests one interceptor holds for cold starts by default, across all routes. Each held
/// request costs a task and its buffered request head (a few KiB), so this keeps a burst
/// against cold apps to a few MiB; `KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS` changes it
/// (0 = unlimited, the official default).
pub const DEFAULT_MAX_PENDING: u32 = 1000;

/// The readiness timeout used when a fallback is set and no other bound is configured.
pub const FALLBACK_READINESS_TIMEOUT: Duration = Duration::from_secs(30);

/// Cold-start state shared by the proxy listeners.
pub struct ColdStart {
    readiness_timeout: Duration,
    max_pending: usize,
    held: Arc<AtomicUsize>,
    rejections: Family<RouteLabels, Counter>,
}

impl std::fmt::Debug for ColdStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdStart")
            .field("readiness_timeout", &self.readiness_timeout)
            .field("max_pending", &self.max_pending)
            .field("held", &self.held.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What to do with a counted request whose target has no ready endpoint.
#[derive(Debug)]
pub enum Admission<'r> {
    /// Wait for readiness; the hold slot is released when the guard drops.
    Hold(Hold),
    /// Answer with the route's placeholder.
    Placeholder(&'r StaticResponse),
    /// The hold queue is full: 503 with `Retry-After`.
    Reject,
}

/// A held request's slot in the per-route and per-interceptor bounds.
#[derive(Debug)]
pub struct Hold {
    global: Arc<AtomicUsize>,
    route: Arc<AtomicUsize>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.global.fetch_sub(1, Ordering::AcqRel);
        self.route.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ColdStart {
    /// Cold-start handling with the interceptor-wide readiness timeout and hold bound
    /// (0 = unlimited); registers `interceptor_cold_start_rejections_total` in `registry`.
    pub fn new(readiness_timeout: Duration, max_pending: u32, registry: &mut Registry) -> Self {
        let rejections = Family::<RouteLabels, Counter>::default();
        registry.register(
            "interceptor_cold_start_rejections",
            "Requests refused (or answered with the placeholder) because the cold-start hold queue was full",
            rejections.clone(),
        );
        Self {
            readiness_timeout,
            max_pending: max_pending as usize,
            held: Arc::new(AtomicUsize::new(0)),
            rejections,
        }
    }

    /// Requests held right now, across routes.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// The readiness timeout of a route (zero: none).
    pub fn readiness_timeout(&self, spec: &InterceptorRouteSpec) -> Duration {
        let configured = spec
            .timeouts
            .as_ref()
            .and_then(|t| t.readiness)
            .map_or(self.readiness_timeout, |d| d.as_duration());
        let has_fallback = spec
            .cold_start
            .as_ref()
            .is_some_and(|c| c.fallback.is_some());
        if configured.is_zero() && has_fallback {
            FALLBACK_READINESS_TIMEOUT
        } else {
            configured
        }
    }

    /// Decides what a counted request for a cold `route` gets.
    pub fn admit<'r>(&self, route: &'r Route) -> Admission<'r> {
        let cold_start = route.source.spec.cold_start.as_ref();
        let placeholder = cold_start
            .and_then(|c| c.placeholder.as_ref())
            .map(|p| &p.response);
        let route_max = cold_start
            .and_then(|c| c.max_pending_requests)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0);
        let overflow_placeholder =
            cold_start.and_then(|c| c.overflow) == Some(Overflow::Placeholder);
        if let Some(placeholder) = placeholder
            && !(overflow_placeholder && route_max.is_some())
        {
            return Admission::Placeholder(placeholder);
        }
        let route_held = route.counters.held();
        let over_route =
            route_held.fetch_add(1, Ordering::AcqRel) >= route_max.unwrap_or(usize::MAX);
        let over_global = self.held.fetch_add(1, Ordering::AcqRel)
            >= if self.max_pending == 0 {
                usize::MAX
            } else {
                self.max_pending
            };
        let hold = Hold {
            global: Arc::clone(&self.held),
            route: Arc::clone(route_held),
        };
        if !(over_route || over_global) {
            return Admission::Hold(hold);
        }
        drop(hold);
        self.rejections
            .get_or_create(&RouteLabels {
                name: Some(Arc::clone(&route.source.name)),
                namespace: Some(Arc::clone(&route.source.namespace)),
            })
            .inc();
        match placeholder {
            Some(placeholder) if overflow_placeholder => Admission::Placeholder(placeholder),
            _ => Admission::Reject,
        }
    }
}

/// Waits until `pool` has a ready endpoint (true) or `until` passes (false). Woken by the
/// pool's ready receiver, i.e. by the endpoint event itself.
pub async fn wait_ready(pool: &Pool, until: Option<Instant>) -> bool {
    let mut ready = pool.ready();
    let wait = ready.wait_for(|set| !set.ready.is_empty());
    match until {
        None => wait.await.is_ok(),
        Some(until) => matches!(tokio::time::timeout_at(until, wait).await, Ok(Ok(_))),
    }
}

/// The earlier of two optional instants.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
