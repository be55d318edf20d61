//! The idle pool's bounds, with stand-in connections that record when they are closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

/// Closed connections, by name, in the order they were closed (dropped by the pool).
#[derive(Clone, Default)]
struct Closed(Arc<Mutex<Vec<&'static str>>>);

impl Closed {
    fn names(&self) -> Vec<&'static str> {
        self.0.lock().expect("closed").clone()
    }
}

struct Fake {
    name: &'static str,
    ready: Arc<AtomicBool>,
    peer_closed: Arc<AtomicBool>,
    closed: Closed,
}

impl Fake {
    fn new(name: &'static str, closed: &Closed) -> Self {
        Self {
            name,
            ready: Arc::new(AtomicBool::new(true)),
            peer_closed: Arc::new(AtomicBool::new(false)),
            closed: closed.clone(),
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.closed.0.lock().expect("closed").push(self.name);
    }
}

impl Reusable for Fake {
    fn is_closed(&self) -> bool {
        self.peer_closed.load(Ordering::SeqCst)
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

fn pool(per_host: usize, total: usize) -> IdlePool<Fake> {
    IdlePool::new(IdleLimits {
        per_host,
        total,
        timeout: IDLE_TIMEOUT,
    })
}

const A: KeyRef<'static> = KeyRef::Addr(SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    80,
));
const B: KeyRef<'static> = KeyRef::Addr(SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)),
    80,
));

fn take_name(pool: &IdlePool<Fake>, key: KeyRef<'_>) -> Option<&'static str> {
    let conn = pool.take(key)?;
    let name = conn.name;
    // Handed out, not closed: forget the drop record.
    std::mem::forget(conn);
    Some(name)
}

#[tokio::test]
async fn the_most_recent_idle_connection_to_the_same_destination_is_reused() {
    let closed = Closed::default();
    let pool = pool(10, 0);
    pool.put(A, Fake::new("a1", &closed));
    pool.put(A, Fake::new("a2", &closed));
    pool.put(B, Fake::new("b1", &closed));
    assert_eq!(pool.idle_count(), 3);
    assert_eq!(take_name(&pool, A), Some("a2"));
    assert_eq!(take_name(&pool, A), Some("a1"));
    assert_eq!(take_name(&pool, A), None);
    assert_eq!(take_name(&pool, B), Some("b1"));
    assert_eq!(pool.idle_count(), 0);
    assert!(closed.names().is_empty());
}

#[tokio::test]
async fn the_total_bound_closes_the_connection_idle_the_longest_anywhere() {
    let closed = Closed::default();
    let pool = pool(10, 2);
    pool.put(A, Fake::new("a1", &closed));
    pool.put(B, Fake::new("b1", &closed));
    pool.put(B, Fake::new("b2", &closed));
    assert_eq!(closed.names(), ["a1"]);
    assert_eq!(pool.idle_count(), 2);
    assert_eq!(take_name(&pool, A), None);

    // Reused and parked again, b2 is now the most recent: b1 goes next.
    assert_eq!(take_name(&pool, B), Some("b2"));
    pool.put(B, Fake::new("b2'", &closed));
    pool.put(A, Fake::new("a2", &closed));
    assert_eq!(closed.names(), ["a1", "b1"]);
    assert_eq!(take_name(&pool, B), Some("b2'"));
    assert_eq!(take_name(&pool, A), Some("a2"));
}

#[tokio::test]
async fn a_total_of_zero_is_no_bound_and_the_per_host_bound_still_holds() {
    let closed = Closed::default();
    let pool = pool(2, 0);
    for name in ["a1", "a2", "a3"] {
        pool.put(A, Fake::new(name, &closed));
    }
    for name in ["b1", "b2"] {
        pool.put(B, Fake::new(name, &closed));
    }
    // The connection beyond the per-host bound is the one closed.
    assert_eq!(closed.names(), ["a3"]);
    assert_eq!(pool.idle_count(), 4);

    let none = pool_with_no_idle();
    none.put(A, Fake::new("kept-nowhere", &closed));
    assert_eq!(none.idle_count(), 0);
    assert_eq!(closed.names(), ["a3", "kept-nowhere"]);
}

fn pool_with_no_idle() -> IdlePool<Fake> {
    pool(0, 0)
}

#[tokio::test]
async fn closed_connections_are_never_reused_and_busy_ones_wait() {
    let closed = Closed::default();
    let pool = pool(10, 0);
    let old = Fake::new("old", &closed);
    let gone = Fake::new("gone", &closed);
    let busy = Fake::new("busy", &closed);
    let peer_closed = Arc::clone(&gone.peer_closed);
    let busy_ready = Arc::clone(&busy.ready);
    busy_ready.store(false, Ordering::SeqCst);
    pool.put(A, old);
    pool.put(A, gone);
    pool.put(A, busy);
    peer_closed.store(true, Ordering::SeqCst);

    // `busy` is skipped (kept), `gone` is dropped, `old` is handed out.
    assert_eq!(take_name(&pool, A), Some("old"));
    assert_eq!(closed.names(), ["gone"]);
    assert_eq!(pool.idle_count(), 1);
    assert_eq!(take_name(&pool, A), None);
    busy_ready.store(true, Ordering::SeqCst);
    assert_eq!(take_name(&pool, A), Some("busy"));

    // A connection closed before it is parked is not kept.
    let closing = Fake::new("closing", &closed);
    closing.peer_closed.store(true, Ordering::SeqCst);
    pool.put(A, closing);
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn closed_connections_make_room_under_the_per_host_bound() {
    let closed = Closed::default();
    let pool = pool(1, 0);
    let stale = Fake::new("stale", &closed);
    let peer_closed = Arc::clone(&stale.peer_closed);
    pool.put(A, stale);
    peer_closed.store(true, Ordering::SeqCst);
    pool.put(A, Fake::new("fresh", &closed));
    assert_eq!(closed.names(), ["stale"]);
    assert_eq!(pool.idle_count(), 1);
    assert_eq!(take_name(&pool, A), Some("fresh"));
}

#[tokio::test]
async fn plain_tls_and_service_destinations_are_apart_but_share_the_total() {
    let closed = Closed::default();
    let pool = pool(10, 2);
    let addr = match A {
        KeyRef::Addr(addr) => addr,
        _ => unreachable!(),
    };
    let name = ServerName::try_from("app.ns").expect("name");
    let tls = KeyRef::Tls(addr, &name);
    let service = KeyRef::Authority("app.ns:80");
    pool.put(A, Fake::new("plain", &closed));
    pool.put(tls, Fake::new("tls", &closed));
    assert_eq!(take_name(&pool, tls), Some("tls"));
    pool.put(tls, Fake::new("tls", &closed));
    pool.put(service, Fake::new("service", &closed));
    assert_eq!(closed.names(), ["plain"]);
    assert_eq!(take_name(&pool, A), None);
    let other = ServerName::try_from("other.ns").expect("name");
    assert_eq!(take_name(&pool, KeyRef::Tls(addr, &other)), None);
    assert_eq!(
        take_name(&pool, KeyRef::Authority("app.ns:80")),
        Some("service")
    );
}

#[tokio::test(start_paused = true)]
async fn unused_connections_are_closed_after_the_idle_timeout() {
    let closed = Closed::default();
    let pool = pool(10, 0);
    pool.put(A, Fake::new("a1", &closed));
    tokio::time::sleep(IDLE_TIMEOUT / 2).await;
    pool.put(B, Fake::new("b1", &closed));
    tokio::time::sleep(IDLE_TIMEOUT / 2 + Duration::from_secs(1)).await;
    assert_eq!(closed.names(), ["a1"]);
    assert_eq!(pool.idle_count(), 1);
    tokio::time::sleep(IDLE_TIMEOUT / 2).await;
    assert_eq!(closed.names(), ["a1", "b1"]);
    assert_eq!(pool.idle_count(), 0);

    // The sweep ended with the pool empty and starts again with the next connection.
    pool.put(A, Fake::new("a2", &closed));
    tokio::time::sleep(IDLE_TIMEOUT + Duration::from_secs(1)).await;
    assert_eq!(closed.names(), ["a1", "b1", "a2"]);
}
