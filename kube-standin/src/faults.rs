//! Fault injection for resilience tests: close every open watch, answer the next N requests
//! with 500 or after a delay, compact history so that resuming watches get 410 Gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::store::Store;

/// The fault switches of one server. Every method takes effect immediately.
#[derive(Debug)]
pub struct Faults {
    fail_next: watch::Sender<u64>,
    delay_next: AtomicU64,
    delay: Mutex<Duration>,
    watches: Mutex<CancellationToken>,
    store: Arc<Store>,
    shutdown: CancellationToken,
}

impl Faults {
    /// Watches are closed by [`Faults::close_watches`] and when `shutdown` is cancelled.
    pub(crate) fn new(store: Arc<Store>, shutdown: CancellationToken) -> Self {
        Self {
            fail_next: watch::Sender::new(0),
            delay_next: AtomicU64::new(0),
            delay: Mutex::new(Duration::ZERO),
            watches: Mutex::new(shutdown.child_token()),
            store,
            shutdown,
        }
    }

    /// Ends every watch stream open now (cleanly, as when an API server restarts or a load
    /// balancer drops idle streams). Later watches are unaffected.
    pub fn close_watches(&self) {
        let mut token = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        token.cancel();
        *token = self.shutdown.child_token();
    }

    /// Answers the next `n` authenticated requests with 500 InternalError.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.send_replace(n);
    }

    /// Holds each of the next `n` authenticated requests for `delay` before serving it.
    pub fn delay_next(&self, n: u64, delay: Duration) {
        *self.delay.lock().unwrap_or_else(PoisonError::into_inner) = delay;
        self.delay_next.store(n, Ordering::SeqCst);
    }

    /// Drops the retained event history: the next watch from a resourceVersion issued before
    /// this call gets a 410 Gone ERROR event (kube-rs watchers then relist), and a paginated
    /// list started before it cannot be continued (410).
    pub fn compact_history(&self) {
        self.store.compact();
    }

    /// How many injected failures remain.
    pub fn pending_failures(&self) -> u64 {
        *self.fail_next.borrow()
    }

    /// A receiver of the remaining failure count, e.g. to wait until a client has consumed
    /// them all: `faults.failures().wait_for(|n| *n == 0)`.
    pub fn failures(&self) -> watch::Receiver<u64> {
        self.fail_next.subscribe()
    }

    pub(crate) fn take_failure(&self) -> bool {
        self.fail_next.send_if_modified(|n| {
            if *n > 0 {
                *n -= 1;
                true
            } else {
                false
            }
        })
    }

    pub(crate) fn take_delay(&self) -> Option<Duration> {
        take_one(&self.delay_next)
            .then(|| *self.delay.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A token cancelled by the next [`Faults::close_watches`] or at shutdown.
    pub(crate) fn watch_token(&self) -> CancellationToken {
        self.watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}
