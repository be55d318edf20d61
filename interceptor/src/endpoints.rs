//! Ready endpoints per target and endpoint selection.
//!
//! A [`Target`] is a Service port of a route (namespace, service, port number or name). An
//! [`EndpointSource`] gives, per target, a [`watch::Receiver`] of its current [`EndpointSet`]:
//! the ready addresses plus the port's `appProtocol`. Tests use [`StaticEndpoints`]; the
//! Kubernetes EndpointSlice watcher implements the same trait.
//!
//! [`Endpoints`] turns a source into one [`Pool`] per target. A pool owns a
//! pingora-load-balancing round-robin balancer over a discovery that reads an
//! `ArcSwap<BTreeSet<Backend>>`; a background task follows the source's receiver, swaps the
//! set and calls `update()` on the balancer, then publishes the applied set on
//! [`Pool::ready`]. A cold-start gate waits on that receiver, so when it wakes the balancer
//! already knows the new endpoints. pingora is used only in this module.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer, discovery::ServiceDiscovery};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The `appProtocol` value that selects HTTP/2 without TLS to the upstream.
pub const APP_PROTOCOL_H2C: &str = "kubernetes.io/h2c";

/// A Service port: by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetPort {
    /// The Service port number.
    Number(i32),
    /// The Service port name.
    Name(Arc<str>),
}

/// A route's upstream: a Service port in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// Namespace of the Service.
    pub namespace: Arc<str>,
    /// Service name.
    pub service: Arc<str>,
    /// Service port.
    pub port: TargetPort,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            TargetPort::Number(n) => write!(f, "{}/{}:{n}", self.namespace, self.service),
            TargetPort::Name(n) => write!(f, "{}/{}:{n}", self.namespace, self.service),
        }
    }
}

/// How to speak to the upstream, from the Service port's `appProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub enum AppProtocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge, no TLS (`kubernetes.io/h2c`).
    H2c,
}

impl AppProtocol {
    /// Reads a Service port's `appProtocol`.
    pub fn from_app_protocol(app_protocol: Option<&str>) -> Self {
        match app_protocol {
            Some(APP_PROTOCOL_H2C) => Self::H2c,
            _ => Self::Http1,
        }
    }
}

/// What the target's Service says about the route's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub enum PortLookup {
    /// No Service is known (static endpoints, or the Service does not exist yet).
    #[default]
    Unknown,
    /// The Service port with this number matches the target.
    Port(u16),
    /// The Service exists but has no port of that name or number (compat §1.4: 500).
    Missing,
}

/// The ready endpoints of a target and how to speak to them.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EndpointSet {
    /// Addresses of ready endpoints (`ip:targetPort`).
    pub ready: BTreeSet<SocketAddr>,
    /// The Service port's protocol.
    pub app_protocol: AppProtocol,
    /// The Service port the target resolves to.
    pub service_port: PortLookup,
}

impl EndpointSet {
    /// A set of ready HTTP/1.1 endpoints.
    pub fn http1(ready: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            ready: ready.into_iter().collect(),
            app_protocol: AppProtocol::Http1,
            service_port: PortLookup::Unknown,
        }
    }

    /// A set of ready h2c endpoints.
    pub fn h2c(ready: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            ready: ready.into_iter().collect(),
            app_protocol: AppProtocol::H2c,
            service_port: PortLookup::Unknown,
        }
    }
}

/// Where ready endpoints come from.
///
/// `watch` is called once per target when a routing table that uses it is installed; the
/// receiver must change whenever the target's ready set or `appProtocol` changes, and hold the
/// empty set while nothing is known. Closing the sender keeps the last value in force.
pub trait EndpointSource: Send + Sync + 'static {
    /// The current ready set of `target` and its changes.
    fn watch(&self, target: &Target) -> watch::Receiver<Arc<EndpointSet>>;
}

/// An in-memory [`EndpointSource`] set by hand (tests, the endpoints file).
#[derive(Debug, Default)]
pub struct StaticEndpoints {
    targets: Mutex<HashMap<Target, watch::Sender<Arc<EndpointSet>>>>,
}

impl StaticEndpoints {
    /// Replaces the ready set of `target`.
    pub fn set(&self, target: Target, set: EndpointSet) {
        let mut targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        let set = Arc::new(set);
        match targets.get(&target) {
            Some(tx) => {
                tx.send_replace(set);
            }
            None => {
                targets.insert(target, watch::channel(set).0);
            }
        }
    }
}

impl EndpointSource for StaticEndpoints {
    fn watch(&self, target: &Target) -> watch::Receiver<Arc<EndpointSet>> {
        let mut targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        targets
            .entry(target.clone())
            .or_insert_with(|| watch::channel(Arc::new(EndpointSet::default())).0)
            .subscribe()
    }
}

/// pingora discovery over a swappable set. It holds the ready set itself (shared with the
/// pool) and makes pingora's backends only while the balancer updates, so that an idle pool
/// does not keep a second copy of them.
struct SwapDiscovery(Arc<ArcSwap<EndpointSet>>);

#[async_trait]
impl ServiceDiscovery for SwapDiscovery {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let backends = self
            .0
            .load()
            .ready
            .iter()
            .filter_map(|addr| Backend::new(&addr.to_string()).ok())
            .collect();
        Ok((backends, HashMap::new()))
    }
}

/// The endpoints of one target, with round-robin selection.
pub struct Pool {
    target: Target,
    lb: LoadBalancer<RoundRobin>,
    /// The set the balancer is being updated to (ahead of `current` during an update).
    backends: Arc<ArcSwap<EndpointSet>>,
    current: ArcSwap<EndpointSet>,
    applied: watch::Sender<Arc<EndpointSet>>,
    _stop: DropGuard,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// The target this pool serves.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The protocol of the target's port.
    pub fn app_protocol(&self) -> AppProtocol {
        self.current.load().app_protocol
    }

    /// Whether any endpoint is ready.
    pub fn has_ready(&self) -> bool {
        !self.current.load().ready.is_empty()
    }

    /// The ready set the balancer currently uses.
    pub fn current(&self) -> Arc<EndpointSet> {
        self.current.load_full()
    }

    /// The applied ready set and its changes; it changes only after the balancer was updated,
    /// so a request woken by it can [`pick`](Self::pick) at once.
    pub fn ready(&self) -> watch::Receiver<Arc<EndpointSet>> {
        self.applied.subscribe()
    }

    /// The next ready endpoint in round-robin order, skipping `exclude`.
    pub fn pick(&self, exclude: &[SocketAddr]) -> Option<SocketAddr> {
        self.lb
            .select_with(b"", 256, |backend, healthy| {
                healthy
                    && backend
                        .addr
                        .as_inet()
                        .is_some_and(|addr| !exclude.contains(addr))
            })
            .and_then(|backend| backend.addr.as_inet().copied())
    }

    async fn apply(&self, set: Arc<EndpointSet>) {
        self.backends.store(Arc::clone(&set));
        if let Err(error) = self.lb.update().await {
            tracing::warn!(target = %self.target, %error, "endpoint update failed");
        }
        self.current.store(Arc::clone(&set));
        self.applied.send_replace(set);
    }
}

/// One [`Pool`] per target, created on demand and shared while any routing table uses it.
pub struct Endpoints {
    source: Arc<dyn EndpointSource>,
    pools: Mutex<HashMap<Target, Weak<Pool>>>,
    /// Dropped pools are swept from `pools` when it reaches this size (twice the live pools
    /// after the previous sweep), so creating n pools costs O(n), not O(n²).
    sweep_at: AtomicUsize,
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints").finish_non_exhaustive()
    }
}

impl Endpoints {
    /// Pools fed by `source`.
    pub fn new(source: Arc<dyn EndpointSource>) -> Self {
        Self {
            source,
            pools: Mutex::new(HashMap::new()),
            sweep_at: AtomicUsize::new(0),
        }
    }

    /// The pool of `target`, created (and synced with the source's current set) if needed.
    /// Must be called inside a Tokio runtime: it spawns the pool's update task.
    pub async fn pool(&self, target: &Target) -> Arc<Pool> {
        let (pool, rx) = {
            let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pool) = pools.get(target).and_then(Weak::upgrade) {
                return pool;
            }
            if pools.len() >= self.sweep_at.load(Ordering::Relaxed) {
                pools.retain(|_, weak| weak.strong_count() > 0);
                self.sweep_at
                    .store(pools.len().saturating_mul(2).max(16), Ordering::Relaxed);
            }
            let backends = Arc::new(ArcSwap::from_pointee(EndpointSet::default()));
            let lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(
                SwapDiscovery(Arc::clone(&backends)),
            )));
            let stop = CancellationToken::new();
            let pool = Arc::new(Pool {
                target: target.clone(),
                lb,
                backends,
                current: ArcSwap::from_pointee(EndpointSet::default()),
                applied: watch::channel(Arc::new(EndpointSet::default())).0,
                _stop: stop.clone().drop_guard(),
            });
            pools.insert(target.clone(), Arc::downgrade(&pool));
            let rx = self.source.watch(target);
            (pool, (rx, stop))
        };
        let (mut rx, stop) = rx;
        let first = Arc::clone(&rx.borrow_and_update());
        pool.apply(first).await;
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    changed = rx.changed() => if changed.is_err() { break },
                }
                let set = Arc::clone(&rx.borrow_and_update());
                let Some(pool) = weak.upgrade() else { break };
                pool.apply(set).await;
            }
        });
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            namespace: "ns".into(),
            service: "svc".into(),
            port: TargetPort::Number(80),
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[tokio::test]
    async fn round_robin_over_ready_endpoints_and_follows_changes() {
        let source = Arc::new(StaticEndpoints::default());
        source.set(target(), EndpointSet::http1([addr(1), addr(2)]));
        let endpoints = Endpoints::new(source.clone());
        let pool = endpoints.pool(&target()).await;
        let picks: BTreeSet<_> = (0..4).filter_map(|_| pool.pick(&[])).collect();
        assert_eq!(picks, BTreeSet::from([addr(1), addr(2)]));
        assert_eq!(pool.pick(&[addr(1)]), Some(addr(2)));
        assert_eq!(pool.pick(&[addr(1), addr(2)]), None);

        let mut ready = pool.ready();
        source.set(target(), EndpointSet::h2c([addr(3)]));
        ready.changed().await.expect("pool alive");
        assert_eq!(pool.pick(&[]), Some(addr(3)));
        assert_eq!(pool.app_protocol(), AppProtocol::H2c);

        source.set(target(), EndpointSet::default());
        ready.changed().await.expect("pool alive");
        assert!(!pool.has_ready());
        assert_eq!(pool.pick(&[]), None);
    }

    #[tokio::test]
    async fn pools_are_shared_per_target() {
        let endpoints = Endpoints::new(Arc::new(StaticEndpoints::default()));
        let a = endpoints.pool(&target()).await;
        let b = endpoints.pool(&target()).await;
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!a.has_ready());
    }

    #[test]
    fn app_protocol_from_service_port() {
        assert_eq!(
            AppProtocol::from_app_protocol(Some("kubernetes.io/h2c")),
            AppProtocol::H2c
        );
        assert_eq!(
            AppProtocol::from_app_protocol(Some("http")),
            AppProtocol::Http1
        );
        assert_eq!(AppProtocol::from_app_protocol(None), AppProtocol::Http1);
    }
}
