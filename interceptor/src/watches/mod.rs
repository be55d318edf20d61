//! The Kubernetes side: kube-rs watchers and reflectors feeding the routing table, the ready
//! endpoints and the ConfigMap response bodies (compat §1.7).
//!
//! Watched (all limited to `KEDA_HTTP_WATCH_NAMESPACE` when set, all retried after at most a
//! second and with `managedFields` trimmed, see [`keda_http_runtime::watch`]):
//!
//! - InterceptorRoutes and HTTPScaledObjects: any change marks the table dirty; one task
//!   rebuilds it from both stores and swaps it whole ([`RouteTableHandle::install`]). A
//!   reflector store only replaces its contents when a (re)list is complete (`InitDone`), so a
//!   table is never built from half a list, and changes that arrive while a rebuild runs are
//!   coalesced into the next one. Both kinds are watched with
//!   [`reflect_checked`]: an object that fails to
//!   decode or fails [`InterceptorRouteSpec::validate`] (or the HTTPScaledObject one) never
//!   reaches the store, so it cannot fail a list; it is logged once per change with its reason
//!   and counted in `keda_http_invalid_objects_total{kind}`.
//! - EndpointSlices labelled `kubernetes.io/service-name` and Services: see [`endpoints`].
//! - ConfigMaps labelled `http.keda.sh/response-body=true`: bodies of placeholders and static
//!   responses ([`KubeBodies`]).
//!
//! Each watched kind is a small `WatchSpec` (kind, label selector, store, what a change
//! means) started by the same loop; the namespace scope is common to all.
//!
//! The first table is installed once every store has completed its first list, so `/readyz`
//! turns 200 only after a full sync. While a watch is down (closed, 5xx, 410 and relist) the
//! stores keep their last contents and the proxy keeps serving from them.
//!
//! With [`KubeWatches::refresh`] the table is also rebuilt from the stores every
//! `KEDA_HTTP_ROUTING_TABLE_REFRESH_INTERVAL`, as the official interceptor re-reads its
//! informer cache (compat §13). A periodic rebuild counts as a successful refresh only while
//! both route watches (InterceptorRoutes, HTTPScaledObjects) are healthy: a watch error makes
//! them unhealthy until the next list or object event, or until [`WATCH_QUIET`] passes with
//! no further error (a resumed watch emits nothing until something changes; a failing one
//! retries at least every 30 s). Each success is recorded in the [`Lifecycle`], whose
//! `/readyz` fails once the last one is older than `KEDA_HTTP_ROUTING_TABLE_MAX_STALENESS`:
//! so it does during an API outage, and if this task stalls.
//!
//! [`InterceptorRouteSpec::validate`]: keda_http_api::interceptor_route::InterceptorRouteSpec

pub mod endpoints;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use keda_http_api::{HTTPScaledObject, InterceptorRoute};
use keda_http_runtime::watch::{Checks, InvalidObjects, QuickBackoff, reflect_checked};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::Lifecycle;
use crate::proxy::respond::{BodyLookup, BodySource};
use crate::routing::RouteTableHandle;
pub use endpoints::{KubeEndpoints, SERVICE_NAME_LABEL};

/// The label a ConfigMap needs to serve response bodies.
pub const RESPONSE_BODY_LABEL: &str = "http.keda.sh/response-body";

/// The stores of every watched kind and the endpoint source over them. Create it, hand
/// [`KubeWatches::endpoints`] and [`KubeWatches::bodies`] to the interceptor, then
/// [`KubeWatches::spawn`] the watches with its routing-table handle.
pub struct KubeWatches {
    client: Client,
    namespace: Option<String>,
    routes: (
        Store<InterceptorRoute>,
        reflector::store::Writer<InterceptorRoute>,
    ),
    httpsos: (
        Store<HTTPScaledObject>,
        reflector::store::Writer<HTTPScaledObject>,
    ),
    slices: (
        Store<EndpointSlice>,
        reflector::store::Writer<EndpointSlice>,
    ),
    services: (Store<Service>, reflector::store::Writer<Service>),
    configmaps: reflector::store::Writer<ConfigMap>,
    endpoints: Arc<KubeEndpoints>,
    bodies: Arc<KubeBodies>,
    refresh: Option<RoutingRefresh>,
    invalid: InvalidObjects,
}

/// How long the route watches must go without an error to count as healthy again when no
/// event says so (longer than the watcher's 30 s backoff cap, so a continuing outage never
/// looks quiet).
pub const WATCH_QUIET: Duration = Duration::from_secs(60);

/// Whether the route watches are healthy: `Some(t)` when the last error at `t` was not yet
/// followed by a list or object event.
type RouteWatchHealth = Arc<Mutex<Option<tokio::time::Instant>>>;

/// Healthy: no error since the last event, or none for [`WATCH_QUIET`].
fn is_healthy(health: &RouteWatchHealth) -> bool {
    health
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_none_or(|failed| failed.elapsed() >= WATCH_QUIET)
}

/// The periodic routing-table refresh (`KEDA_HTTP_ROUTING_TABLE_REFRESH_INTERVAL`,
/// `KEDA_HTTP_ROUTING_TABLE_MAX_STALENESS`) and where its successes are recorded.
#[derive(Debug, Clone)]
pub struct RoutingRefresh {
    /// Time between rebuilds; must not be zero.
    pub interval: Duration,
    /// `/readyz` fails when no refresh succeeded for this long; zero disables the check.
    pub max_staleness: Duration,
    /// Where refreshes are recorded (`/readyz` reads it).
    pub lifecycle: Arc<Lifecycle>,
}

impl Debug for KubeWatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeWatches")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubeWatches {
    /// Stores for `client`, limited to `namespace` unless it is empty.
    pub fn new(client: Client, namespace: &str) -> Self {
        let (slice_store, slices) = reflector::store();
        let (service_store, services) = reflector::store();
        let (cm_store, configmaps) = reflector::store();
        let endpoints = Arc::new(KubeEndpoints::new(
            slice_store.clone(),
            service_store.clone(),
        ));
        Self {
            client,
            namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
            routes: reflector::store(),
            httpsos: reflector::store(),
            slices: (slice_store, slices),
            services: (service_store, services),
            configmaps,
            endpoints,
            bodies: Arc::new(KubeBodies(cm_store)),
            refresh: None,
            invalid: InvalidObjects::default(),
        }
    }

    /// Rebuilds the table periodically and records each successful refresh (see the module
    /// doc). Without it the table is rebuilt on changes only and never goes stale.
    #[must_use]
    pub fn refresh(mut self, refresh: RoutingRefresh) -> Self {
        self.refresh = Some(refresh);
        self
    }

    /// Counts skipped InterceptorRoutes and HTTPScaledObjects in `invalid` (registered in the
    /// interceptor's metrics, [`Interceptor::invalid_objects`](crate::Interceptor::invalid_objects)).
    #[must_use]
    pub fn count_invalid_in(mut self, invalid: InvalidObjects) -> Self {
        self.invalid = invalid;
        self
    }

    /// The endpoint source for [`Interceptor::bind_with`](crate::Interceptor::bind_with).
    pub fn endpoints(&self) -> Arc<KubeEndpoints> {
        Arc::clone(&self.endpoints)
    }

    /// The ConfigMap bodies for [`Interceptor::bind_with`](crate::Interceptor::bind_with).
    pub fn bodies(&self) -> Arc<KubeBodies> {
        Arc::clone(&self.bodies)
    }

    /// Starts every watch and the route-table task; they run until `stop` is cancelled.
    pub fn spawn(self, routes_handle: RouteTableHandle, stop: CancellationToken) {
        let Self {
            client,
            namespace,
            routes: (ir_store, ir_writer),
            httpsos: (so_store, so_writer),
            slices: (slice_store, slice_writer),
            services: (service_store, service_writer),
            configmaps,
            endpoints,
            bodies,
            refresh,
            invalid,
        } = self;
        let (dirty_tx, dirty_rx) = watch::channel(0u64);
        let dirty = Arc::new(dirty_tx);
        // One health per route watch: an event on one does not clear the other's failure.
        let route_health: [RouteWatchHealth; 2] = Default::default();
        // HTTPScaledObject is deprecated: a cluster without its CRD must not keep us unready.
        let (so_missing_tx, so_missing) = watch::channel(false);
        let specs: [Box<dyn StartWatch>; 5] = [
            WatchSpec::boxed(
                "interceptorroutes",
                ir_writer,
                track_health(&route_health[0], |_| true, mark_dirty(&dirty)),
            )
            .checked(
                Checks::new(|ir: &InterceptorRoute| ir.spec.validate().map_err(|e| e.to_string()))
                    .counted(invalid.clone()),
            ),
            WatchSpec::boxed(
                "httpscaledobjects",
                so_writer,
                // A cluster without the deprecated CRD is healthy: its 404s do not count.
                track_health(
                    &route_health[1],
                    |e| !is_not_found(e),
                    httpsos_changed(&dirty, so_missing_tx),
                ),
            )
            .checked(
                Checks::new(|so: &HTTPScaledObject| so.spec.validate().map_err(|e| e.to_string()))
                    .counted(invalid),
            ),
            WatchSpec::boxed(
                "endpointslices",
                slice_writer,
                slice_changed(Arc::clone(&endpoints)),
            )
            .labels(SERVICE_NAME_LABEL),
            WatchSpec::boxed(
                "services",
                service_writer,
                service_changed(Arc::clone(&endpoints)),
            ),
            WatchSpec::boxed("configmaps", configmaps, |_: Change<'_, ConfigMap>| {})
                .labels(&format!("{RESPONSE_BODY_LABEL}=true")),
        ];
        let scope = Scope {
            client,
            namespace,
            stop: stop.clone(),
        };
        for spec in specs {
            spec.start(&scope);
        }

        let stores_ready = all_synced(
            ir_store.clone(),
            so_store.clone(),
            so_missing,
            slice_store,
            service_store,
            bodies.0.clone(),
        );
        tokio::spawn(route_table_task(
            ir_store,
            so_store,
            routes_handle,
            dirty_rx,
            stores_ready,
            refresh.map(|r| (r, route_health)),
            stop,
        ));
    }
}

/// What a watch event means to its consumer.
enum Change<'a, K> {
    /// A (re)list started; the store still holds the previous state.
    Init,
    /// An object was added, changed or deleted (the store is already updated).
    Object(&'a K),
    /// A (re)list completed and the store was replaced.
    Synced,
    /// The watch failed (it is retried with backoff).
    Failed(&'a watcher::Error),
}

/// What reacts to one kind's changes.
type OnChange<K> = Box<dyn FnMut(Change<'_, K>) + Send>;

/// What every watched kind is: a namespaced resource the watcher and reflector can handle.
trait Watched:
    Resource<
        Scope = kube::core::NamespaceResourceScope,
        DynamicType: Clone + Default + Eq + std::hash::Hash + Send + Sync,
    > + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<
            Scope = kube::core::NamespaceResourceScope,
            DynamicType: Clone + Default + Eq + std::hash::Hash + Send + Sync,
        > + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// One watched kind: its name in logs, label selector, store, what a change means and, for
/// kinds our types or validation may refuse, the per-object checks.
struct WatchSpec<K: Watched> {
    kind: &'static str,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    on_change: OnChange<K>,
    checks: Option<Checks<K>>,
}

impl<K: Watched> WatchSpec<K> {
    /// Every object of the kind in the scope.
    fn boxed(
        kind: &'static str,
        writer: reflector::store::Writer<K>,
        on_change: impl FnMut(Change<'_, K>) + Send + 'static,
    ) -> Box<Self> {
        Box::new(Self {
            kind,
            config: watcher::Config::default(),
            writer,
            on_change: Box::new(on_change),
            checks: None,
        })
    }

    /// Objects are decoded one by one and skipped when they fail `checks`.
    fn checked(mut self: Box<Self>, checks: Checks<K>) -> Box<Self> {
        self.checks = Some(checks);
        self
    }

    /// Only objects matching the label selector.
    fn labels(mut self: Box<Self>, selector: &str) -> Box<Self> {
        self.config = self.config.labels(selector);
        self
    }
}

/// Where the watches run: the client, the namespace scope (all when `None`), the stop signal.
struct Scope {
    client: Client,
    namespace: Option<String>,
    stop: CancellationToken,
}

impl Scope {
    fn api<K: Watched>(&self) -> Api<K> {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// A [`WatchSpec`] of any kind, started by the one loop in [`KubeWatches::spawn`].
trait StartWatch {
    fn start(self: Box<Self>, scope: &Scope);
}

impl<K: Watched> StartWatch for WatchSpec<K> {
    fn start(self: Box<Self>, scope: &Scope) {
        let WatchSpec {
            kind,
            config,
            writer,
            on_change,
            checks,
        } = *self;
        let stream: EventStream<K> = match checks {
            Some(checks) => reflect_checked(
                scope.client.clone(),
                scope.namespace.as_deref(),
                config,
                writer,
                checks,
            )
            .boxed(),
            None => reflector::reflector(
                writer,
                watcher(scope.api(), config)
                    .backoff(QuickBackoff::default())
                    .modify(|obj: &mut K| {
                        obj.meta_mut().managed_fields = None;
                    }),
            )
            .boxed(),
        };
        spawn_watch(kind, stream, on_change, scope.stop.clone());
    }
}

/// The reflected events of one watch.
type EventStream<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// Routes: any change or completed list marks the table dirty.
fn mark_dirty<K>(dirty: &Arc<watch::Sender<u64>>) -> impl FnMut(Change<'_, K>) + Send + 'static {
    let dirty = Arc::clone(dirty);
    move |change| {
        if matches!(change, Change::Object(_) | Change::Synced) {
            dirty.send_modify(|n| *n += 1);
        }
    }
}

/// Records the watch's health in `health` (the periodic refresh reads it), then `inner`.
/// Only errors for which `counts` is true make the watch unhealthy.
fn track_health<K>(
    health: &RouteWatchHealth,
    counts: fn(&watcher::Error) -> bool,
    mut inner: impl FnMut(Change<'_, K>) + Send + 'static,
) -> impl FnMut(Change<'_, K>) + Send + 'static {
    let health = Arc::clone(health);
    move |change| {
        let failed = match change {
            Change::Failed(error) if counts(error) => Some(Some(tokio::time::Instant::now())),
            Change::Failed(_) => None,
            Change::Object(_) | Change::Synced => Some(None),
            Change::Init => None,
        };
        if let Some(failed) = failed {
            *health.lock().unwrap_or_else(PoisonError::into_inner) = failed;
        }
        inner(change);
    }
}

/// HTTPScaledObjects: as routes, and a 404 (no CRD) is reported on `missing`.
fn httpsos_changed(
    dirty: &Arc<watch::Sender<u64>>,
    missing: watch::Sender<bool>,
) -> impl FnMut(Change<'_, HTTPScaledObject>) + Send + 'static {
    let mut mark = mark_dirty(dirty);
    move |change| match change {
        Change::Failed(error) => {
            if is_not_found(error) {
                missing.send_replace(true);
            }
        }
        change => mark(change),
    }
}

/// EndpointSlices: the slice's Service is refreshed; a completed list refreshes all.
fn slice_changed(
    endpoints: Arc<KubeEndpoints>,
) -> impl FnMut(Change<'_, EndpointSlice>) + Send + 'static {
    move |change| match change {
        Change::Object(slice) => {
            if let (Some(ns), Some(svc)) = (
                slice.metadata.namespace.as_deref(),
                slice.labels().get(SERVICE_NAME_LABEL),
            ) {
                endpoints.refresh_service(ns, svc);
            }
        }
        Change::Synced => endpoints.refresh_all(),
        Change::Init | Change::Failed(_) => {}
    }
}

/// Services (port names, `appProtocol`): that Service is refreshed; a completed list
/// refreshes all.
fn service_changed(
    endpoints: Arc<KubeEndpoints>,
) -> impl FnMut(Change<'_, Service>) + Send + 'static {
    move |change| match change {
        Change::Object(svc) => {
            if let (Some(ns), Some(name)) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
            ) {
                endpoints.refresh_service(ns, name);
            }
        }
        Change::Synced => endpoints.refresh_all(),
        Change::Init | Change::Failed(_) => {}
    }
}

/// Resolves true once every store has completed its first list; HTTPScaledObjects count as
/// synced when their CRD is missing (with a warning).
async fn all_synced(
    routes: Store<InterceptorRoute>,
    httpsos: Store<HTTPScaledObject>,
    mut httpsos_missing: watch::Receiver<bool>,
    slices: Store<EndpointSlice>,
    services: Store<Service>,
    configmaps: Store<ConfigMap>,
) -> bool {
    let httpsos_ready = async {
        tokio::select! {
            ready = httpsos.wait_until_ready() => ready.is_ok(),
            missing = httpsos_missing.wait_for(|m| *m) => {
                if missing.is_ok() {
                    tracing::warn!("HTTPScaledObjects cannot be listed (CRD not installed?); routing InterceptorRoutes only until they can");
                }
                missing.is_ok()
            }
        }
    };
    routes.wait_until_ready().await.is_ok()
        && httpsos_ready.await
        && slices.wait_until_ready().await.is_ok()
        && services.wait_until_ready().await.is_ok()
        && configmaps.wait_until_ready().await.is_ok()
}

/// Runs one watch: drives `stream` (which fills the kind's store) and reports each change.
fn spawn_watch<K: Watched>(
    kind: &'static str,
    mut stream: EventStream<K>,
    mut on_change: OnChange<K>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => break,
                event = stream.next() => event,
            };
            match event {
                None => break,
                Some(Ok(watcher::Event::Init)) => {
                    tracing::debug!(kind, "watch (re)listing");
                    on_change(Change::Init);
                }
                Some(Ok(watcher::Event::InitApply(_))) => {}
                Some(Ok(watcher::Event::InitDone)) => {
                    tracing::debug!(kind, "watch synced");
                    on_change(Change::Synced);
                }
                Some(Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj))) => {
                    on_change(Change::Object(&obj));
                }
                Some(Err(error)) => {
                    tracing::warn!(kind, %error, "watch failed; serving the last state, retrying with backoff");
                    on_change(Change::Failed(&error));
                }
            }
        }
    });
}

/// Whether a watch error is the API's 404 (the resource type does not exist).
fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

async fn route_table_task(
    routes: Store<InterceptorRoute>,
    httpsos: Store<HTTPScaledObject>,
    handle: RouteTableHandle,
    mut dirty: watch::Receiver<u64>,
    stores_ready: impl Future<Output = bool>,
    refresh: Option<(RoutingRefresh, [RouteWatchHealth; 2])>,
    stop: CancellationToken,
) {
    tokio::select! {
        () = stop.cancelled() => return,
        ready = stores_ready => if !ready { return },
    }
    let mut ticks = refresh.as_ref().map(|(r, _)| {
        r.lifecycle.check_routing_staleness(r.max_staleness);
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + r.interval, r.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    loop {
        dirty.borrow_and_update();
        let report = handle.install_collection(snapshot(&routes, &httpsos)).await;
        tracing::info!(
            routes = report.routes,
            skipped = report.shadowed,
            "routing table installed from Kubernetes"
        );
        // Wait for a change, or for a periodic refresh that succeeds.
        loop {
            let tick = async {
                match &mut ticks {
                    Some(ticks) => ticks.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                changed = dirty.changed() => if changed.is_err() { return } else { break },
                _ = tick => {}
            }
            if let Some((refresh, health)) = &refresh {
                if health.iter().all(is_healthy) {
                    refresh.lifecycle.routing_refreshed();
                    break;
                }
                tracing::warn!("routing table not refreshed: the route watches are failing");
            }
        }
    }
}

/// The routes in the stores as the interceptor serves them: collected by
/// `keda_http_api::routing::collect`, with every skipped object logged.
fn snapshot(
    routes: &Store<InterceptorRoute>,
    httpsos: &Store<HTTPScaledObject>,
) -> keda_http_api::routing::Collection {
    let irs = routes.state();
    let sos = httpsos.state();
    let collection =
        keda_http_api::routing::collect(irs.iter().map(|ir| &**ir), sos.iter().map(|so| &**so));
    for skipped in &collection.skipped {
        match &skipped.reason {
            keda_http_api::routing::SkipReason::Shadowed => {
                tracing::debug!(%skipped, "route skipped");
            }
            _ => tracing::warn!(%skipped, "route skipped"),
        }
    }
    collection
}

/// Response bodies from ConfigMaps labelled `http.keda.sh/response-body=true`.
#[derive(Clone)]
pub struct KubeBodies(Store<ConfigMap>);

impl Debug for KubeBodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBodies").finish_non_exhaustive()
    }
}

impl BodySource for KubeBodies {
    fn lookup(&self, namespace: &str, name: &str, key: &str) -> BodyLookup {
        let Some(cm) = self.0.get(&ObjectRef::new(name).within(namespace)) else {
            return BodyLookup::NoConfigMap;
        };
        if let Some(text) = cm.data.as_ref().and_then(|d| d.get(key)) {
            return BodyLookup::Found(Bytes::from(text.clone()));
        }
        match cm.binary_data.as_ref().and_then(|d| d.get(key)) {
            Some(bytes) => BodyLookup::Found(Bytes::from(bytes.0.clone())),
            None => BodyLookup::NoKey,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_resource_type_is_recognised() {
        let status = |code| Box::new(kube::core::Status::failure("no", "NotFound").with_code(code));
        assert!(is_not_found(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(404))
        )));
        assert!(is_not_found(&watcher::Error::WatchError(status(404))));
        assert!(!is_not_found(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(500))
        )));
        assert!(!is_not_found(&watcher::Error::NoResourceVersion));
    }

    /// A route watch error makes the refresh fail until an event (or a quiet minute) says the
    /// watch works again; the missing HTTPScaledObject CRD never does.
    #[tokio::test(start_paused = true)]
    async fn route_watch_health_follows_errors_and_events() {
        let health: RouteWatchHealth = Arc::default();
        let mut routes = track_health::<InterceptorRoute>(&health, |_| true, |_| {});
        assert!(is_healthy(&health));
        routes(Change::Failed(&watcher::Error::NoResourceVersion));
        assert!(!is_healthy(&health));
        routes(Change::Init);
        assert!(!is_healthy(&health), "a relist start proves nothing");
        routes(Change::Synced);
        assert!(is_healthy(&health));

        routes(Change::Failed(&watcher::Error::NoResourceVersion));
        tokio::time::advance(WATCH_QUIET - Duration::from_secs(1)).await;
        assert!(!is_healthy(&health));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            is_healthy(&health),
            "quiet for a minute: the resumed watch is fine"
        );

        let missing: RouteWatchHealth = Arc::default();
        let mut httpsos = track_health::<HTTPScaledObject>(&missing, |e| !is_not_found(e), |_| {});
        let not_found = watcher::Error::WatchError(Box::new(
            kube::core::Status::failure("no", "NotFound").with_code(404),
        ));
        httpsos(Change::Failed(&not_found));
        assert!(is_healthy(&missing));
    }
}
