//! The interceptor's life cycle, owned in one place: the [`Phase`] (watched by tests and
//! `/readyz`), and the signals that end the listeners. One [`Lifecycle`] is created per
//! interceptor and shared by the proxy (draining answers, upgraded connections), the admin
//! handler (readiness) and the accept loops (their stop tokens).
//!
//! Shutdown moves through the phases in order (compat §1.6): `Serving` → `Draining` (not
//! ready, HTTP/1 responses close their connection, still accepting) → `Closing` (the proxy
//! listeners stop accepting; in-flight requests and upgraded connections finish, or are
//! dropped by [`Lifecycle::stop_now`] past the drain timeout) → `Stopped` (admin and metrics
//! listeners ended). A phase never goes back.
//!
//! It also holds the routing table's freshness (compat §13): when the Kubernetes watches
//! refresh the table periodically they record each successful refresh here, and `/readyz`
//! fails once the last one is older than `KEDA_HTTP_ROUTING_TABLE_MAX_STALENESS`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where the interceptor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving normally.
    Serving,
    /// Shutdown began: `/readyz` is 503 and HTTP/1 responses close their connection, but
    /// the listeners still accept (the shutdown delay).
    Draining,
    /// The proxy listener is closed; in-flight requests and upgraded connections finish.
    Closing,
    /// Everything has stopped.
    Stopped,
}

/// The phase and the stop signals of one interceptor.
#[derive(Debug)]
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
    /// `phase >= Draining`, readable on the request path without the watch channel's lock.
    /// Written only by [`Lifecycle::advance`], together with `phase`.
    draining: AtomicBool,
    /// Cancelled at `Closing`: the proxy listeners stop accepting and ask their connections
    /// to finish.
    close: CancellationToken,
    /// Cancelled at the drain timeout, just before `hard_stop`: requests still held for a
    /// cold start are answered 503 instead of being reset.
    release_held: CancellationToken,
    /// Cancelled past the drain timeout: remaining proxy and upgraded connections are dropped.
    hard_stop: CancellationToken,
    /// Cancelled last: the admin and metrics listeners end.
    admin_stop: CancellationToken,
    /// The routing table's freshness; unchecked until a refresh loop enables it.
    routing: Mutex<Freshness>,
}

/// When the routing table was last refreshed, and how old it may get.
#[derive(Debug, Default, Clone, Copy)]
struct Freshness {
    /// `None`: staleness is not checked (no periodic refresh, or a bound of 0).
    max_staleness: Option<Duration>,
    last_refresh: Option<Instant>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A life cycle in [`Phase::Serving`].
    pub fn new() -> Self {
        Self {
            phase: watch::channel(Phase::Serving).0,
            draining: AtomicBool::new(false),
            close: CancellationToken::new(),
            release_held: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            admin_stop: CancellationToken::new(),
            routing: Mutex::new(Freshness::default()),
        }
    }

    /// Starts checking the routing table's age: from now on it is stale once no refresh was
    /// recorded for `max_staleness` (`0` leaves it unchecked). Counts as a refresh.
    pub fn check_routing_staleness(&self, max_staleness: Duration) {
        self.update_routing(|f| {
            f.max_staleness = (!max_staleness.is_zero()).then_some(max_staleness);
            f.last_refresh = Some(Instant::now());
        });
    }

    /// A successful refresh of the routing table happened now.
    pub fn routing_refreshed(&self) {
        self.update_routing(|f| f.last_refresh = Some(Instant::now()));
    }

    /// Whether the routing table is fresh enough for `/readyz` (always, when unchecked).
    pub fn routing_is_fresh(&self) -> bool {
        let freshness = match self.routing.lock() {
            Ok(f) => *f,
            Err(poisoned) => *poisoned.into_inner(),
        };
        match (freshness.max_staleness, freshness.last_refresh) {
            (Some(max), Some(last)) => last.elapsed() <= max,
            _ => true,
        }
    }

    fn update_routing(&self, update: impl FnOnce(&mut Freshness)) {
        match self.routing.lock() {
            Ok(mut f) => update(&mut f),
            Err(poisoned) => update(&mut poisoned.into_inner()),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// The phase and its changes.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Whether shutdown has begun (cheap: one atomic load).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Shutdown begins: not ready, HTTP/1 responses carry `Connection: close`.
    pub fn start_draining(&self) {
        self.advance(Phase::Draining);
    }

    /// The proxy listeners stop accepting; their connections are asked to finish.
    pub fn close(&self) {
        self.advance(Phase::Closing);
        self.close.cancel();
    }

    /// Requests still held for a cold start stop waiting and are answered 503 (the drain
    /// deadline has come; [`stop_now`](Self::stop_now) follows shortly).
    pub fn release_held(&self) {
        self.release_held.cancel();
    }

    /// Cancelled by [`release_held`](Self::release_held).
    pub fn release_held_signal(&self) -> CancellationToken {
        self.release_held.clone()
    }

    /// Drops the remaining proxy connections and upgraded connections now.
    pub fn stop_now(&self) {
        self.hard_stop.cancel();
    }

    /// The admin and metrics listeners stop.
    pub fn close_admin(&self) {
        self.admin_stop.cancel();
    }

    /// Everything has stopped.
    pub fn stopped(&self) {
        self.advance(Phase::Stopped);
    }

    /// Cancelled when the proxy listeners close ([`close`](Self::close)).
    pub fn close_signal(&self) -> CancellationToken {
        self.close.clone()
    }

    /// Cancelled by [`stop_now`](Self::stop_now).
    pub fn hard_stop_signal(&self) -> CancellationToken {
        self.hard_stop.clone()
    }

    /// Cancelled by [`close_admin`](Self::close_admin).
    pub fn admin_signal(&self) -> CancellationToken {
        self.admin_stop.clone()
    }

    /// Moves forward to `to` (never back).
    fn advance(&self, to: Phase) {
        if to >= Phase::Draining {
            self.draining.store(true, Ordering::Release);
        }
        self.phase.send_if_modified(|phase| {
            let forward = to > *phase;
            if forward {
                *phase = to;
            }
            forward
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_moves_forward_through_the_phases() {
        let life = Lifecycle::new();
        let mut seen = life.subscribe();
        assert_eq!(life.phase(), Phase::Serving);
        assert!(!life.is_draining());

        life.start_draining();
        assert_eq!(life.phase(), Phase::Draining);
        assert!(life.is_draining());
        assert!(!life.close_signal().is_cancelled(), "still accepting");
        assert!(seen.has_changed().expect("open"));
        seen.borrow_and_update();

        life.close();
        assert_eq!(life.phase(), Phase::Closing);
        assert!(life.close_signal().is_cancelled());
        assert!(!life.hard_stop_signal().is_cancelled());
        assert!(!life.admin_signal().is_cancelled());

        life.stop_now();
        assert!(life.hard_stop_signal().is_cancelled());
        life.close_admin();
        assert!(life.admin_signal().is_cancelled());
        life.stopped();
        assert_eq!(*seen.borrow_and_update(), Phase::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn routing_goes_stale_without_refreshes() {
        let life = Lifecycle::new();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(
            life.routing_is_fresh(),
            "unchecked until a refresh loop runs"
        );

        life.check_routing_staleness(Duration::from_secs(300));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(life.routing_is_fresh());
        life.routing_refreshed();
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(life.routing_is_fresh());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!life.routing_is_fresh(), "older than the bound");
        life.routing_refreshed();
        assert!(life.routing_is_fresh(), "a refresh makes it fresh again");

        life.check_routing_staleness(Duration::ZERO);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(life.routing_is_fresh(), "0 disables the check");
    }

    #[test]
    fn a_phase_never_goes_back() {
        let life = Lifecycle::new();
        life.close();
        let seen = life.subscribe();
        life.start_draining();
        assert_eq!(life.phase(), Phase::Closing);
        assert!(life.is_draining());
        assert!(
            !seen.has_changed().expect("open"),
            "no change was announced"
        );
    }
}
