//! Per-route request counting (compat §4.1) and the `/queue` snapshot (§4.2).
//!
//! Each route key `"<namespace>/<name>"` has one [`RouteCounters`]: `Concurrency` (requests in
//! flight) and `RequestCount` (monotonic). A request enters with [`RouteCounters::enter`], which
//! returns an [`InFlight`] guard; dropping the guard leaves. The proxy keeps the guard inside the
//! response body (or the upgraded connection's splice task), so a request counts until its
//! response has ended, the client went away, or the upgraded connection closed.
//!
//! The set of keys follows the routing table: [`Queue::retain_keys`] is called on every install,
//! keeping the counters of surviving routes and dropping the vanished ones.
//!
//! [`Queue::changes`] is the change-notification primitive behind `/queue/watch`: it is bumped
//! whenever a route goes from quiet to active or back (0 ↔ 1 in flight) and whenever the key set
//! changes, so a subscriber learns of the first request for a cold route at once.
//! [`Queue::activations`] counts the quiet → active transitions alone, so that a subscriber can
//! tell an activation (worth sending at once) from a route going quiet (worth batching).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use keda_http_api::queue::{QueueCount, QueueCounts};
use tokio::sync::watch;

/// The counters of one route.
#[derive(Debug)]
pub struct RouteCounters {
    key: Arc<str>,
    concurrency: AtomicI64,
    request_count: AtomicI64,
    changes: Arc<Changes>,
    /// Requests held for a cold start (bounded by `coldStart.maxPendingRequests`).
    held: Arc<AtomicUsize>,
}

/// Bumps a generation number on a watch channel (rarely: only on quiet ↔ active transitions).
#[derive(Debug)]
struct Changes {
    generation: AtomicU64,
    /// Quiet → active transitions so far (counted before the bump that announces them).
    activations: AtomicU64,
    tx: watch::Sender<u64>,
}

impl Changes {
    fn new() -> Self {
        Self {
            generation: AtomicU64::new(0),
            activations: AtomicU64::new(0),
            tx: watch::channel(0).0,
        }
    }

    fn bump(&self) {
        let next = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.tx.send_replace(next);
    }

    fn activate(&self) {
        self.activations.fetch_add(1, Ordering::Release);
        self.bump();
    }
}

impl RouteCounters {
    /// The route key `"<namespace>/<name>"`.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// Counts a request in: concurrency and request count +1. The returned guard counts it out.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.request_count.fetch_add(1, Ordering::Relaxed);
        if self.concurrency.fetch_add(1, Ordering::AcqRel) == 0 {
            self.changes.activate();
        }
        InFlight {
            counters: Arc::clone(self),
        }
    }

    /// Requests of this route held for a cold start now; kept across table installs.
    pub fn held(&self) -> &Arc<AtomicUsize> {
        &self.held
    }

    /// The current counts.
    pub fn get(&self) -> QueueCount {
        QueueCount {
            concurrency: self.concurrency.load(Ordering::Acquire).max(0),
            request_count: self.request_count.load(Ordering::Relaxed),
        }
    }
}

/// A request in flight; dropping it decrements the route's concurrency.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlight {
    counters: Arc<RouteCounters>,
}

impl InFlight {
    /// The route key this request counts against.
    pub fn key(&self) -> &Arc<str> {
        &self.counters.key
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.counters.concurrency.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.counters.changes.bump();
        }
    }
}

/// All routes' counters.
#[derive(Debug)]
pub struct Queue {
    routes: ArcSwap<BTreeMap<Arc<str>, Arc<RouteCounters>>>,
    changes: Arc<Changes>,
    /// Serialises writers (table installs); readers never take it.
    write: std::sync::Mutex<()>,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            routes: ArcSwap::from_pointee(BTreeMap::new()),
            changes: Arc::new(Changes::new()),
            write: std::sync::Mutex::new(()),
        }
    }
}

impl Queue {
    /// Makes the key set exactly `keys`: existing counters are kept, new keys start at zero,
    /// others are dropped. Returns the counters of every key, in `keys` order.
    pub fn retain_keys<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<Arc<str>, Arc<RouteCounters>> {
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.routes.load_full();
        let mut next = BTreeMap::new();
        for key in keys {
            let counters = current.get(key).cloned().unwrap_or_else(|| {
                Arc::new(RouteCounters {
                    key: Arc::from(key),
                    concurrency: AtomicI64::new(0),
                    request_count: AtomicI64::new(0),
                    changes: Arc::clone(&self.changes),
                    held: Arc::new(AtomicUsize::new(0)),
                })
            });
            next.insert(Arc::clone(&counters.key), counters);
        }
        let changed = next.len() != current.len() || next.keys().ne(current.keys());
        self.routes.store(Arc::new(next.clone()));
        if changed {
            self.changes.bump();
        }
        next
    }

    /// The counters of one key, if it is known.
    pub fn get(&self, key: &str) -> Option<Arc<RouteCounters>> {
        self.routes.load().get(key).cloned()
    }

    /// Every known route's counts, zeros included.
    pub fn snapshot(&self) -> QueueCounts {
        QueueCounts(
            self.routes
                .load()
                .iter()
                .map(|(key, counters)| (key.to_string(), counters.get()))
                .collect(),
        )
    }

    /// A receiver that changes when a route goes quiet ↔ active or the key set changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.tx.subscribe()
    }

    /// How many times a route went from quiet to active so far. A change announced on
    /// [`Self::changes`] that moved this number includes an activation.
    pub fn activations(&self) -> u64 {
        self.changes.activations.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_and_out() {
        let queue = Queue::default();
        let counters = queue.retain_keys(["a/x", "b/y"]);
        let x = &counters["a/x"];
        let g1 = x.enter();
        let g2 = x.enter();
        assert_eq!(x.get().concurrency, 2);
        drop(g1);
        assert_eq!(
            x.get(),
            QueueCount {
                concurrency: 1,
                request_count: 2
            }
        );
        drop(g2);
        assert_eq!(x.get().concurrency, 0);
        assert_eq!(
            String::from_utf8(queue.snapshot().to_body()).expect("utf-8"),
            "{\"a/x\":{\"Concurrency\":0,\"RequestCount\":2},\"b/y\":{\"Concurrency\":0,\"RequestCount\":0}}\n"
        );
    }

    #[test]
    fn retain_keeps_survivors_and_drops_the_rest() {
        let queue = Queue::default();
        let first = queue.retain_keys(["a/x", "b/y"]);
        let _g = first["a/x"].enter();
        let second = queue.retain_keys(["a/x", "c/z"]);
        assert!(Arc::ptr_eq(&first["a/x"], &second["a/x"]));
        assert!(queue.get("b/y").is_none());
        assert_eq!(queue.snapshot().0.len(), 2);
        assert_eq!(queue.snapshot().0["a/x"].concurrency, 1);
    }

    #[test]
    fn changes_fire_on_quiet_active_transitions_only() {
        let queue = Queue::default();
        let counters = queue.retain_keys(["a/x"]);
        let mut rx = queue.changes();
        rx.borrow_and_update();
        let g1 = counters["a/x"].enter();
        assert!(rx.has_changed().expect("open"));
        rx.borrow_and_update();
        let g2 = counters["a/x"].enter();
        drop(g2);
        assert!(
            !rx.has_changed().expect("open"),
            "1 → 2 → 1 is not a transition"
        );
        drop(g1);
        assert!(rx.has_changed().expect("open"));
    }

    #[test]
    fn activations_count_quiet_to_active_only() {
        let queue = Queue::default();
        let counters = queue.retain_keys(["a/x", "b/y"]);
        assert_eq!(queue.activations(), 0);
        let g1 = counters["a/x"].enter();
        let g2 = counters["a/x"].enter();
        assert_eq!(queue.activations(), 1, "1 → 2 is no activation");
        drop((g1, g2));
        queue.retain_keys(["a/x"]);
        assert_eq!(
            queue.activations(),
            1,
            "going quiet or a key set change is none"
        );
        let _g3 = counters["a/x"].enter();
        assert_eq!(queue.activations(), 2);
    }
}
