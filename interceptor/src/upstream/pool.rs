//! The idle HTTP/1.1 connections to backends, plain and TLS in one pool, with three bounds:
//! at most `per_host` idle connections per destination (`KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST`;
//! a connection beyond it is closed), at most `total` idle connections to all destinations
//! together (`KEDA_HTTP_MAX_IDLE_CONNS`, 0 = no bound; beyond it the connection idle the
//! longest, wherever it goes, is closed), and an idle timeout after which a connection is
//! closed by a background sweep. Closing a connection is dropping its sender: hyper then
//! ends the connection once any response still in flight on it has been read.
//!
//! A connection is parked here as soon as its response headers have arrived; it is handed out
//! again only once [`Reusable::is_ready`] says its previous exchange has ended, and never
//! when it is closed. The destinations are a short list scanned linearly: only destinations
//! that have an idle connection are in it, and comparing two keys costs a few instructions,
//! which beats hashing them for the handful of endpoints a route usually has.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{Key, KeyRef};

/// How long an unused connection is kept (as Go's `http.Transport` default `IdleConnTimeout`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What the pool needs to know of a connection.
pub trait Reusable {
    /// The connection is gone (the peer closed it, or it failed).
    fn is_closed(&self) -> bool;
    /// The connection can take a request now (its previous exchange has ended).
    fn is_ready(&self) -> bool;
}

impl<B> Reusable for hyper::client::conn::http1::SendRequest<B> {
    fn is_closed(&self) -> bool {
        hyper::client::conn::http1::SendRequest::is_closed(self)
    }

    fn is_ready(&self) -> bool {
        hyper::client::conn::http1::SendRequest::is_ready(self)
    }
}

/// The bounds of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleLimits {
    /// Idle connections kept per destination (0: none are kept).
    pub per_host: usize,
    /// Idle connections kept in total (0: no bound).
    pub total: usize,
    /// How long an unused connection is kept.
    pub timeout: Duration,
}

/// Idle connections of type `C` by destination; cheap to clone (one shared pool).
pub struct IdlePool<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for IdlePool<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> std::fmt::Debug for IdlePool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdlePool")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

struct Shared<C> {
    limits: IdleLimits,
    idle: Mutex<Idle<C>>,
}

/// The pool's state behind its lock.
struct Idle<C> {
    /// Destinations with at least one idle connection.
    hosts: Vec<Host<C>>,
    /// Idle connections over all destinations.
    total: usize,
    /// Orders parked connections: a lower number has been idle longer.
    next_seq: u64,
    /// Whether the sweep task runs.
    sweeping: bool,
}

struct Host<C> {
    key: Key,
    /// Oldest first.
    conns: VecDeque<Parked<C>>,
}

struct Parked<C> {
    conn: C,
    seq: u64,
    since: Instant,
}

impl<C: Reusable + Send + 'static> IdlePool<C> {
    /// An empty pool with these bounds.
    pub fn new(limits: IdleLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                idle: Mutex::new(Idle {
                    hosts: Vec::new(),
                    total: 0,
                    next_seq: 0,
                    sweeping: false,
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Idle<C>> {
        self.shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently parked connection to `key` that is ready for a request. Closed
    /// connections met on the way are dropped; busy ones stay.
    pub fn take(&self, key: KeyRef<'_>) -> Option<C> {
        let mut idle = self.lock();
        let h = idle.hosts.iter().position(|h| h.key.as_ref() == key)?;
        let host = &mut idle.hosts[h];
        let mut found = None;
        let mut dropped = 0;
        let mut i = host.conns.len();
        while i > 0 {
            i -= 1;
            let conn = &host.conns[i].conn;
            if conn.is_closed() {
                host.conns.remove(i);
                dropped += 1;
            } else if conn.is_ready() {
                found = host.conns.remove(i).map(|p| p.conn);
                break;
            }
        }
        let empty = host.conns.is_empty();
        idle.total -= dropped + usize::from(found.is_some());
        if empty {
            idle.hosts.swap_remove(h);
        }
        found
    }

    /// Parks `conn`, a connection to `key`, for reuse; closes it instead when `key` has
    /// `per_host` idle connections already, and closes the connection idle the longest when
    /// the total goes over `total`.
    pub fn put(&self, key: KeyRef<'_>, conn: C) {
        let limits = self.shared.limits;
        if limits.per_host == 0 || conn.is_closed() {
            return;
        }
        let since = Instant::now();
        let mut idle = self.lock();
        let seq = idle.next_seq;
        idle.next_seq += 1;
        let parked = Parked { conn, seq, since };
        let h = match idle.hosts.iter().position(|h| h.key.as_ref() == key) {
            Some(h) => h,
            None => {
                idle.hosts.push(Host {
                    key: key.to_owned(),
                    conns: VecDeque::new(),
                });
                idle.hosts.len() - 1
            }
        };
        let conns = &mut idle.hosts[h].conns;
        let before = conns.len();
        if before >= limits.per_host {
            // Full: closed connections make room first, else this one is closed.
            conns.retain(|p| !p.conn.is_closed());
        }
        let kept = conns.len() < limits.per_host;
        if kept {
            conns.push_back(parked);
        }
        let after = conns.len();
        idle.total = idle.total + after - before;
        if !kept {
            return;
        }
        if limits.total > 0 && idle.total > limits.total {
            idle.close_longest_idle();
        }
        if !idle.sweeping {
            idle.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(&self.shared)));
        }
    }

    /// Idle connections over all destinations.
    pub fn idle_count(&self) -> usize {
        self.lock().total
    }
}

impl<C> Idle<C> {
    /// Closes the connection parked the longest, wherever it goes.
    fn close_longest_idle(&mut self) {
        let oldest = self
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.conns.front().map(|p| (i, p.seq)))
            .min_by_key(|&(_, seq)| seq);
        if let Some((h, _)) = oldest {
            self.hosts[h].conns.pop_front();
            self.total -= 1;
            if self.hosts[h].conns.is_empty() {
                self.hosts.swap_remove(h);
            }
        }
    }

    /// Drops the connections idle for `timeout` at `now` and the closed ones; returns when
    /// the next remaining one expires (none: the pool is empty).
    fn expire(&mut self, now: Instant, timeout: Duration) -> Option<Instant>
    where
        C: Reusable,
    {
        let mut removed = 0;
        for host in &mut self.hosts {
            let before = host.conns.len();
            host.conns
                .retain(|p| now.duration_since(p.since) < timeout && !p.conn.is_closed());
            removed += before - host.conns.len();
        }
        self.hosts.retain(|h| !h.conns.is_empty());
        self.total -= removed;
        self.hosts
            .iter()
            .filter_map(|h| h.conns.front().map(|p| p.since))
            .min()
            .map(|since| since + timeout)
    }
}

/// Closes expired connections until the pool is empty or dropped.
async fn sweep<C: Reusable>(shared: Weak<Shared<C>>) {
    let Some(timeout) = shared.upgrade().map(|s| s.limits.timeout) else {
        return;
    };
    let mut wake = Instant::now() + timeout;
    loop {
        tokio::time::sleep_until(wake).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut idle = shared.idle.lock().unwrap_or_else(PoisonError::into_inner);
        match idle.expire(now, timeout) {
            Some(next) => wake = next.max(now + Duration::from_millis(1)),
            None => {
                idle.sweeping = false;
                return;
            }
        }
    }
}
