//! The seam between whatever watches routes (Kubernetes, a file, a test) and the proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use keda_http_api::routing::{Collection, collect_unchecked};
use keda_http_api::{HTTPScaledObject, InterceptorRoute};
use tokio::sync::watch;

use super::{Route, RouteSource, RouteTable};
use crate::endpoints::Endpoints;
use crate::queue::Queue;

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// Routes in the new table.
    pub routes: usize,
    /// Objects skipped: HTTPScaledObjects shadowed by an InterceptorRoute of the same
    /// namespace/name, objects without a name or namespace, and (when installed from a
    /// [`Collection`]) invalid objects.
    pub shadowed: usize,
}

/// Shared handle to the current routing table. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct RouteTableHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: ArcSwap<RouteTable>,
    queue: Arc<Queue>,
    endpoints: Arc<Endpoints>,
    installed: AtomicBool,
    installs: watch::Sender<u64>,
    /// Serialises installs (readers never take it).
    install: tokio::sync::Mutex<()>,
}

impl RouteTableHandle {
    /// An empty, not yet installed table over `queue` and `endpoints`.
    pub fn new(queue: Arc<Queue>, endpoints: Arc<Endpoints>) -> Self {
        Self {
            inner: Arc::new(Inner {
                table: ArcSwap::from_pointee(RouteTable::default()),
                queue,
                endpoints,
                installed: AtomicBool::new(false),
                installs: watch::channel(0).0,
                install: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Builds a table from the full current set of InterceptorRoutes and HTTPScaledObjects and
    /// swaps it in: queue keys follow the table (new keys at zero, vanished ones dropped), each
    /// target gets its endpoint pool. Requests already routed keep their old snapshot.
    ///
    /// The objects are trusted (routes files, tests): they are collected without `validate()`
    /// ([`collect_unchecked`]). Watched objects go through [`Self::install_collection`].
    pub async fn install(
        &self,
        routes: Vec<InterceptorRoute>,
        httpsos: Vec<HTTPScaledObject>,
    ) -> InstallReport {
        self.install_collection(collect_unchecked(&routes, &httpsos))
            .await
    }

    /// Installs the sources of a collection (see [`keda_http_api::routing::collect()`]), counting
    /// its skipped objects in the report.
    pub async fn install_collection(&self, collection: Collection) -> InstallReport {
        let skipped = collection.skipped.len();
        self.install_sources(collection.sources)
            .await
            .with_shadowed(skipped)
    }

    /// Installs already collected sources.
    pub async fn install_sources(&self, sources: Vec<RouteSource>) -> InstallReport {
        let _one_at_a_time = self.inner.install.lock().await;
        let keys: Vec<String> = sources.iter().map(RouteSource::key).collect();
        let counters = self
            .inner
            .queue
            .retain_keys(keys.iter().map(String::as_str));
        let mut bound = Vec::with_capacity(sources.len());
        for (source, key) in sources.into_iter().zip(&keys) {
            let Some(counters) = counters.get(key.as_str()).cloned() else {
                continue;
            };
            let target = super::target(&source);
            let pool = self.inner.endpoints.pool(&target).await;
            let fallback = match super::fallback_target(&source) {
                Some(t) => Some(self.inner.endpoints.pool(&t).await),
                None => None,
            };
            let metrics = Arc::new(crate::metrics::RouteMetrics::new(
                crate::metrics::RouteLabels {
                    name: Some(Arc::clone(&source.name)),
                    namespace: Some(Arc::clone(&source.namespace)),
                },
            ));
            bound.push(Arc::new(Route {
                key: Arc::clone(counters.key()),
                metrics,
                source,
                target,
                counters,
                pool,
                fallback,
            }));
        }
        let report = InstallReport {
            routes: bound.len(),
            shadowed: 0,
        };
        self.inner.table.store(Arc::new(RouteTable::new(bound)));
        self.inner.installed.store(true, Ordering::Release);
        self.inner.installs.send_modify(|n| *n += 1);
        report
    }

    /// The current table. Load once per request and use that snapshot throughout.
    pub fn load(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.inner.table.load()
    }

    /// The current table as an owned `Arc` (for work that outlives a request, e.g. `/routes`).
    pub fn load_full(&self) -> Arc<RouteTable> {
        self.inner.table.load_full()
    }

    /// Whether any table has been installed yet (`/readyz`).
    pub fn is_installed(&self) -> bool {
        self.inner.installed.load(Ordering::Acquire)
    }

    /// Changes once per install.
    pub fn installs(&self) -> watch::Receiver<u64> {
        self.inner.installs.subscribe()
    }

    /// The queue the tables count into.
    pub fn queue(&self) -> &Arc<Queue> {
        &self.inner.queue
    }
}

impl InstallReport {
    fn with_shadowed(mut self, shadowed: usize) -> Self {
        self.shadowed = shadowed;
        self
    }
}
