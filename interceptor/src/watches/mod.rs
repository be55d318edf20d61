//! The Kubernetes side: kube-rs watchers and reflectors feeding the routing table, the ready
//! endpoints and the ConfigMap response bodies (reference §1.7).
//!
//! Watched (all limited to `KEDA_HTTP_WATCH_NAMESPACE` when set, all with the watcher's default
//! backoff and `managedFields` trimmed):
//!
//! - InterceptorRoutes and HTTPScaledObjects: any change marks the table dirty; one task
//!   rebuilds it from both stores and swaps it whole ([`RouteTableHandle::install`]). A
//!   reflector store only replaces its contents when a (re)list is complete (`InitDone`), so a
//!   table is never built from half a list, and changes that arrive while a rebuild runs are
//!   coalesced into the next one. Objects that fail [`InterceptorRouteSpec::validate`] are
//!   skipped with a warning.
//! - EndpointSlices labelled `kubernetes.io/service-name` and Services: see [`endpoints`].
//! - ConfigMaps labelled `http.keda.sh/response-body=true`: bodies of placeholders and static
//!   responses ([`KubeBodies`]).
//!
//! The first table is installed once every store has completed its first list, so `/readyz`
//! turns 200 only after a full sync. While a watch is down (closed, 5xx, 410 and relist) the
//! stores keep their last contents and the proxy keeps serving from them.
//!
//! [`InterceptorRouteSpec::validate`]: keda_http_api::interceptor_route::InterceptorRouteSpec

pub mod endpoints;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use keda_http_api::{HTTPScaledObject, InterceptorRoute};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::coldstart::{BodyLookup, BodySource};
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
    slices: Option<reflector::store::Writer<EndpointSlice>>,
    services: Option<reflector::store::Writer<Service>>,
    configmaps: Option<reflector::store::Writer<ConfigMap>>,
    slice_store: Store<EndpointSlice>,
    service_store: Store<Service>,
    endpoints: Arc<KubeEndpoints>,
    bodies: Arc<KubeBodies>,
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
            slices: Some(slices),
            services: Some(services),
            configmaps: Some(configmaps),
            slice_store,
            service_store,
            endpoints,
            bodies: Arc::new(KubeBodies(cm_store)),
        }
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
    pub fn spawn(mut self, routes_handle: RouteTableHandle, stop: CancellationToken) {
        let (dirty_tx, dirty_rx) = watch::channel(0u64);
        let dirty_tx = Arc::new(dirty_tx);

        let ir_api: Api<InterceptorRoute> = self.api();
        let (ir_store, ir_writer) = self.routes;
        let mark = Arc::clone(&dirty_tx);
        spawn_watch(
            "interceptorroutes",
            ir_api,
            watcher::Config::default(),
            ir_writer,
            stop.clone(),
            move |change| {
                if matches!(change, Change::Object(_) | Change::Synced) {
                    mark.send_modify(|n| *n += 1);
                }
            },
        );

        let so_api: Api<HTTPScaledObject> = Self::api_of(&self.client, self.namespace.as_deref());
        let (so_store, so_writer) = self.httpsos;
        let mark = Arc::clone(&dirty_tx);
        // HTTPScaledObject is deprecated: a cluster without its CRD must not keep us unready.
        let (so_missing_tx, mut so_missing) = watch::channel(false);
        spawn_watch(
            "httpscaledobjects",
            so_api,
            watcher::Config::default(),
            so_writer,
            stop.clone(),
            move |change| match change {
                Change::Init => {}
                Change::Failed(error) => {
                    if is_not_found(error) {
                        so_missing_tx.send_replace(true);
                    }
                }
                Change::Object(_) | Change::Synced => {
                    mark.send_modify(|n| *n += 1);
                }
            },
        );

        let endpoints = Arc::clone(&self.endpoints);
        if let Some(writer) = self.slices.take() {
            let api: Api<EndpointSlice> = Self::api_of(&self.client, self.namespace.as_deref());
            spawn_watch(
                "endpointslices",
                api,
                watcher::Config::default().labels(SERVICE_NAME_LABEL),
                writer,
                stop.clone(),
                move |change: Change<'_, EndpointSlice>| match change {
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
                },
            );
        }
        let endpoints = Arc::clone(&self.endpoints);
        if let Some(writer) = self.services.take() {
            let api: Api<Service> = Self::api_of(&self.client, self.namespace.as_deref());
            spawn_watch(
                "services",
                api,
                watcher::Config::default(),
                writer,
                stop.clone(),
                move |change: Change<'_, Service>| match change {
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
                },
            );
        }
        if let Some(writer) = self.configmaps.take() {
            let api: Api<ConfigMap> = Self::api_of(&self.client, self.namespace.as_deref());
            spawn_watch(
                "configmaps",
                api,
                watcher::Config::default().labels(&format!("{RESPONSE_BODY_LABEL}=true")),
                writer,
                stop.clone(),
                |_| {},
            );
        }

        let stores_ready = {
            let (a, b, c, d, e) = (
                ir_store.clone(),
                so_store.clone(),
                self.slice_store.clone(),
                self.service_store.clone(),
                self.bodies.0.clone(),
            );
            async move {
                let httpsos_ready = async {
                    tokio::select! {
                        ready = b.wait_until_ready() => ready.is_ok(),
                        missing = so_missing.wait_for(|m| *m) => {
                            if missing.is_ok() {
                                tracing::warn!("HTTPScaledObjects cannot be listed (CRD not installed?); routing InterceptorRoutes only until they can");
                            }
                            missing.is_ok()
                        }
                    }
                };
                a.wait_until_ready().await.is_ok()
                    && httpsos_ready.await
                    && c.wait_until_ready().await.is_ok()
                    && d.wait_until_ready().await.is_ok()
                    && e.wait_until_ready().await.is_ok()
            }
        };
        tokio::spawn(route_table_task(
            ir_store,
            so_store,
            routes_handle,
            dirty_rx,
            stores_ready,
            stop,
        ));
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Self::api_of(&self.client, self.namespace.as_deref())
    }

    fn api_of<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
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

fn spawn_watch<K, F>(
    kind: &'static str,
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    stop: CancellationToken,
    mut on_change: F,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Default + Eq + std::hash::Hash + Send + Sync,
    F: FnMut(Change<'_, K>) + Send + 'static,
{
    let stream = reflector::reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            .modify(|obj: &mut K| {
                obj.meta_mut().managed_fields = None;
            }),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
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
    stop: CancellationToken,
) {
    tokio::select! {
        () = stop.cancelled() => return,
        ready = stores_ready => if !ready { return },
    }
    loop {
        dirty.borrow_and_update();
        let report = handle.install_collection(snapshot(&routes, &httpsos)).await;
        tracing::info!(
            routes = report.routes,
            skipped = report.shadowed,
            "routing table installed from Kubernetes"
        );
        tokio::select! {
            () = stop.cancelled() => return,
            changed = dirty.changed() => if changed.is_err() { return },
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
}
