//! Connect retries (compat §1.5): when connecting to the upstream fails before any byte of the
//! request was sent (refused, reset, connect timeout), the request is dialled again after a
//! short jittered backoff — the first retry within [`FIRST_BACKOFF`], doubling up to
//! [`MAX_BACKOFF`] — rotating over the ready endpoints (or the Service address again), at most
//! `KEDA_HTTP_RETRY_COUNT` times and never past the request deadline. A request whose body
//! has started streaming upstream is never retried.
//!
//! This is a small loop in [`super::forward`] rather than `tower::retry`: a retry policy there
//! must clone the request, and ours carries the client's streaming body, which cannot be
//! cloned or buffered; it is handed back (unpolled) by the failed attempt instead.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::metrics::RouteLabels;

pub use crate::config::DEFAULT_RETRY_COUNT;

/// Upper bound of the first backoff.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// Cap of the backoff (the official interceptor re-dials every 50 ms).
pub const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// The retry bound and the per-route retry counter.
#[derive(Debug, Clone)]
pub struct Retry {
    max_retries: u32,
    retries: Family<RouteLabels, Counter>,
}

impl Retry {
    /// At most `max_retries` re-dials per request (0: none); registers
    /// `interceptor_upstream_connect_retries_total` in `registry`.
    pub fn new(max_retries: u32, registry: &mut Registry) -> Self {
        let retries = Family::<RouteLabels, Counter>::default();
        registry.register(
            "interceptor_upstream_connect_retries",
            "Upstream connects retried after a failure before the request was sent, per route",
            retries.clone(),
        );
        Self {
            max_retries,
            retries,
        }
    }

    /// A policy without retries and an unregistered counter (tests, benches).
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            retries: Family::default(),
        }
    }

    /// Re-dials allowed per request.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Counts `n` retries of a request on the route labelled `labels`.
    pub fn record(&self, labels: &RouteLabels, n: u32) {
        if n > 0 {
            self.retries.get_or_create(labels).inc_by(u64::from(n));
        }
    }
}

/// The wait before retry number `retry` (1-based): a random time between half and all of
/// `FIRST_BACKOFF · 2^(retry-1)`, capped at [`MAX_BACKOFF`].
pub fn backoff(retry: u32) -> Duration {
    let shift = retry.saturating_sub(1).min(8);
    let ceiling = FIRST_BACKOFF.saturating_mul(1 << shift).min(MAX_BACKOFF);
    let half = ceiling / 2;
    let span = u64::try_from((ceiling - half).as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    half + Duration::from_micros(jitter() % span)
}

/// A random number (the std hasher's per-instance random keys, over a process counter).
fn jitter() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn first_retry_is_quick_and_later_ones_are_capped() {
        for _ in 0..200 {
            let first = backoff(1);
            assert!(
                first <= FIRST_BACKOFF && first >= FIRST_BACKOFF / 2,
                "{first:?}"
            );
            for retry in [5, 10, 100, u32::MAX] {
                let later = backoff(retry);
                assert!(
                    later <= MAX_BACKOFF && later >= MAX_BACKOFF / 2,
                    "{later:?}"
                );
            }
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let waits: std::collections::HashSet<Duration> = (0..50).map(|_| backoff(4)).collect();
        assert!(waits.len() > 1, "no jitter: {waits:?}");
    }

    #[test]
    fn retries_are_counted_per_route() {
        let mut registry = Registry::default();
        let retry = Retry::new(3, &mut registry);
        let labels = RouteLabels {
            name: Some(Arc::from("app")),
            namespace: Some(Arc::from("default")),
        };
        retry.record(&labels, 2);
        retry.record(&labels, 0);
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains("interceptor_upstream_connect_retries_total{") && text.contains("} 2"),
            "{text}"
        );
    }
}
