//! The InterceptorRoute controller: writes `Ready` with `observedGeneration` on every
//! InterceptorRoute. Beyond the official operator (which always says `Ready=True`), it reports
//! `Ready=False` when the target Service does not exist (`ServiceNotFound`) or when another
//! InterceptorRoute or HTTPScaledObject claims exactly the same host + path + headers key
//! (`RouteConflict`, naming both routes).
//!
//! InterceptorRoutes and HTTPScaledObjects are watched object by object ([`reflect_checked`]):
//! one that fails to decode or validate is left out of every store, so it cannot stop a list.
//! An InterceptorRoute left out gets `Ready=False` / `InvalidSpec` and a Warning event (and a
//! count in `keda_http_invalid_objects_total{kind}`); the HTTPScaledObject controller does the
//! same for its kind.
//!
//! Services, HTTPScaledObjects and InterceptorRoutes are mirrored in reflector stores that this
//! controller owns. A change that can alter another route's verdict (a Service appearing or
//! disappearing, a route's spec changing, a route being deleted) re-queues every route once the
//! store has applied it, so verdicts are computed from the same state that triggered them.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Service;
use keda_http_api::routing::{self, RouteId, RouteKey, RouteKind};
use keda_http_api::{HTTPScaledObject, InterceptorRoute};
use keda_http_runtime::watch::{CheckedKind, Checks, QuickBackoff, reflect_checked};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Outcome};
use crate::status::{self, Readiness};

/// Controller name in metrics.
pub const CONTROLLER: &str = "interceptorroute";

/// What went wrong in one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the status failed.
    #[error("writing the InterceptorRoute status: {0}")]
    Status(#[source] kube::Error),
    /// The object has no namespace (InterceptorRoutes are namespaced).
    #[error("InterceptorRoute has no namespace")]
    NoNamespace,
}

/// Shared state of the controller.
pub struct Context {
    client: Client,
    metrics: Metrics,
    services: Store<Service>,
    /// Set when listing Services is forbidden (RBAC without `services`): the Service check
    /// is then skipped instead of holding every route's status back.
    services_forbidden: Arc<AtomicBool>,
    routes: Store<InterceptorRoute>,
    httpsos: Store<HTTPScaledObject>,
}

/// Runs the controller until `shutdown` is cancelled (then finishes in-flight reconciles).
pub async fn run(
    client: Client,
    metrics: Metrics,
    recorder: Recorder,
    watch_namespace: Option<&str>,
    shutdown: CancellationToken,
) {
    let services_forbidden = Arc::new(AtomicBool::new(false));
    let (services_reader, services_stream) = mirrored::<Service>(
        &client,
        watch_namespace,
        Some(Arc::clone(&services_forbidden)),
        None,
    );
    // Skipped objects are reported by the main watch below and the HTTPScaledObject
    // controller; these mirrors leave them out silently.
    let (routes_reader, routes_stream) = mirrored::<InterceptorRoute>(
        &client,
        watch_namespace,
        None,
        Some(route_checks().silent()),
    );
    let (httpsos_reader, httpsos_stream) = mirrored::<HTTPScaledObject>(
        &client,
        watch_namespace,
        None,
        Some(
            Checks::new(|h: &HTTPScaledObject| h.spec.validate().map_err(|e| e.to_string()))
                .silent(),
        ),
    );
    let (invalid_tx, invalid_rx) = tokio::sync::mpsc::unbounded_channel();
    let (reader, writer) = reflector::store();
    let routes = reflect_checked(
        client.clone(),
        watch_namespace,
        watcher::Config::default().any_semantic(),
        writer,
        route_checks()
            .counted(metrics.invalid_objects())
            .on_invalid(move |invalid| {
                let _ = invalid_tx.send(invalid.clone());
            }),
    );
    let mark_invalid = crate::mark_invalid_objects::<InterceptorRoute>(
        client.clone(),
        recorder,
        invalid_rx,
        None,
        shutdown.clone(),
    );
    let ctx = Arc::new(Context {
        client,
        metrics,
        services: services_reader,
        services_forbidden,
        routes: routes_reader,
        httpsos: httpsos_reader,
    });
    let controller = Controller::for_stream(routes.applied_objects(), reader)
        .trigger_backoff(QuickBackoff::default())
        .reconcile_all_on(services_stream)
        .reconcile_all_on(routes_stream)
        .reconcile_all_on(httpsos_stream);
    let store = controller.store();
    let driven = controller
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(controller = CONTROLLER, %error, "controller event");
            }
        });
    futures::join!(
        crate::drive_controller(driven, store, shutdown),
        mark_invalid
    );
}

/// InterceptorRoutes that fail validation are skipped like those that fail to decode.
fn route_checks() -> Checks<InterceptorRoute> {
    Checks::new(|r: &InterceptorRoute| r.spec.validate().map_err(|e| e.to_string()))
}

/// A reflector store of `K` and a stream that yields once per change that matters to other
/// routes: an object appearing, its `metadata.generation` changing (spec edits; Services have
/// no generation, so only their appearance counts), its deletion, and the end of each relist.
/// Status-only updates yield nothing, so our own status writes do not fan out. With
/// `forbidden`, a 403 from the API server sets the flag and yields once. With `checks`, the
/// kind is watched object by object and objects failing them are left out.
fn mirrored<K>(
    client: &Client,
    namespace: Option<&str>,
    forbidden: Option<Arc<AtomicBool>>,
    checks: Option<Checks<K>>,
) -> (Store<K>, impl Stream<Item = ()> + Send + 'static)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + CheckedKind,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().any_semantic();
    let events: BoxStream<'static, Result<watcher::Event<K>, watcher::Error>> = match checks {
        Some(checks) => reflect_checked(client.clone(), namespace, config, writer, checks).boxed(),
        None => {
            let api: Api<K> = match namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            reflector::reflector(
                writer,
                watcher(api, config).backoff(QuickBackoff::default()),
            )
            .boxed()
        }
    };
    let mut seen: HashMap<ObjectRef<K>, Option<i64>> = HashMap::new();
    let stream = events.filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                remember(&mut seen, ObjectRef::from_obj(&obj), obj.meta().generation)
            }
            Ok(watcher::Event::Delete(obj)) => {
                seen.remove(&ObjectRef::from_obj(&obj));
                true
            }
            Ok(watcher::Event::InitDone) => true,
            Ok(watcher::Event::Init) => false,
            Err(error) => match forbidden.as_ref().filter(|_| is_forbidden(&error)) {
                Some(flag) => {
                    if !flag.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            kind = %K::kind(&()),
                            %error,
                            "listing is forbidden; InterceptorRoutes are reported Ready without \
                             checking their target Service (grant get/list/watch on services)"
                        );
                    }
                    true
                }
                None => {
                    tracing::debug!(kind = %K::kind(&()), %error, "watch error; retrying");
                    false
                }
            },
        };
        futures::future::ready(changed.then_some(()))
    });
    (reader, stream)
}

fn is_forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 403,
        watcher::Error::WatchError(s) => s.code == 403,
        _ => false,
    }
}

fn remember<T: Eq + Hash>(
    seen: &mut HashMap<T, Option<i64>>,
    key: T,
    generation: Option<i64>,
) -> bool {
    seen.insert(key, generation) != Some(generation)
}

/// One reconcile, timed and counted.
pub async fn reconcile(route: Arc<InterceptorRoute>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&route, &ctx).await;
    let outcome = if result.is_ok() {
        Outcome::Success
    } else {
        Outcome::Error
    };
    ctx.metrics.record(CONTROLLER, outcome, started.elapsed());
    result
}

/// Retries after five seconds.
pub fn error_policy(route: Arc<InterceptorRoute>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        controller = CONTROLLER,
        namespace = route.namespace().unwrap_or_default(),
        name = %route.name_any(),
        %error,
        "reconcile failed"
    );
    Action::requeue(std::time::Duration::from_secs(5))
}

async fn reconcile_inner(route: &InterceptorRoute, ctx: &Context) -> Result<Action, Error> {
    if route.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = route.namespace().ok_or(Error::NoNamespace)?;
    // Verdicts need complete stores. A store that has not finished its first list will
    // trigger every route once it has, so there is nothing to wait for here (and waiting
    // would hold up a graceful shutdown, which stops the streams that fill the stores).
    let ready = |r: Option<Result<(), _>>| matches!(r, Some(Ok(())));
    let services_ready = ctx.services_forbidden.load(Ordering::Relaxed)
        || ready(ctx.services.wait_until_ready().now_or_never());
    if !(services_ready
        && ready(ctx.routes.wait_until_ready().now_or_never())
        && ready(ctx.httpsos.wait_until_ready().now_or_never()))
    {
        return Ok(Action::await_change());
    }
    let readiness = verdict(route, &namespace, ctx);
    let new = status::ready_condition(
        route
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default(),
        &readiness,
        route.meta().generation,
        Timestamp::now(),
    );
    let previous = route
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let conditions = status::with_condition(previous, new);
    if conditions.as_slice() != previous {
        let api: Api<InterceptorRoute> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(
            &route.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": { "conditions": conditions } })),
        )
        .await
        .map_err(Error::Status)?;
    }
    Ok(Action::await_change())
}

fn verdict(route: &InterceptorRoute, namespace: &str, ctx: &Context) -> Readiness {
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    let service = &route.spec.target.service;
    if !ctx.services_forbidden.load(Ordering::Relaxed)
        && ctx
            .services
            .get(&ObjectRef::new(service).within(namespace))
            .is_none()
    {
        problems.push((
            status::REASON_SERVICE_NOT_FOUND,
            format!("target Service {namespace}/{service} does not exist"),
        ));
    }
    let routes = ctx.routes.state();
    let httpsos = ctx.httpsos.state();
    if let Some(message) = route_conflict(
        route,
        namespace,
        routes.iter().map(|r| &**r),
        httpsos.iter().map(|h| &**h),
    ) {
        problems.push((status::REASON_ROUTE_CONFLICT, message));
    }
    match problems.first() {
        None => Readiness::ready(status::REASON_RECONCILED, "InterceptorRoute reconciled"),
        Some((reason, _)) => Readiness::not_ready(
            reason,
            problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// The conflict message for `route` (in `namespace`) against the live routes, if it shares a
/// key with any. Routes are collected as the interceptor collects them
/// ([`routing::collect`]): invalid objects and HTTPScaledObjects shadowed by an
/// InterceptorRoute of the same namespace/name take no traffic, so they conflict with nothing;
/// an invalid `route` itself claims nothing. Objects being deleted are left out.
fn route_conflict<'a>(
    route: &InterceptorRoute,
    namespace: &str,
    routes: impl IntoIterator<Item = &'a InterceptorRoute>,
    httpsos: impl IntoIterator<Item = &'a HTTPScaledObject>,
) -> Option<String> {
    if route.spec.validate().is_err() {
        return None;
    }
    let live = |meta: &kube::api::ObjectMeta| meta.deletion_timestamp.is_none();
    let collection = routing::collect(
        routes.into_iter().filter(|r| live(&r.metadata)),
        httpsos.into_iter().filter(|h| live(&h.metadata)),
    );
    let others: Vec<(RouteId, BTreeSet<RouteKey>)> = collection
        .sources
        .iter()
        .map(|s| (s.id(), s.route_keys()))
        .collect();
    let me = RouteId {
        kind: RouteKind::InterceptorRoute,
        namespace: namespace.to_owned(),
        name: route.name_any(),
    };
    let my_keys = routing::keys(&route.spec);
    let conflicts = routing::conflicts(
        &me,
        &my_keys,
        others.iter().map(|(id, keys)| (id.clone(), keys)),
    );
    routing::conflict_message(&me, &conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_objects_and_generation_changes_count() {
        let mut seen = HashMap::new();
        assert!(remember(&mut seen, "a", Some(1)));
        assert!(!remember(&mut seen, "a", Some(1)), "status-only update");
        assert!(remember(&mut seen, "a", Some(2)));
        assert!(remember(&mut seen, "svc", None), "a Service appearing");
        assert!(!remember(&mut seen, "svc", None), "a Service changing");
    }

    #[test]
    fn conflicts_follow_the_interceptors_collection() {
        use keda_http_api::routing::builders::{httpso, interceptor_route, rule, valid_spec};

        let on = |host: &str| valid_spec(vec![rule(&[host], &["/"], &[])]);
        let me = interceptor_route("ns", "me", on("a.example"));
        let twin = interceptor_route("ns", "twin", on("A.example:80"));
        let msg = route_conflict(&me, "ns", [&me, &twin], []).expect("conflict");
        assert_eq!(
            msg,
            "InterceptorRoute ns/me and InterceptorRoute ns/twin claim the same route \
             (host \"a.example\", path \"/\")"
        );

        // An invalid route takes no traffic, so it conflicts with nothing, either way.
        let mut invalid = twin.clone();
        invalid.spec.target.port_name = Some("http".into());
        assert_eq!(route_conflict(&me, "ns", [&me, &invalid], []), None);
        assert_eq!(route_conflict(&invalid, "ns", [&me, &invalid], []), None);

        // An HTTPScaledObject conflicts unless an InterceptorRoute of its name shadows it.
        let so = httpso("ns", "legacy", &["a.example"], &[]);
        let msg = route_conflict(&me, "ns", [&me], [&so]).expect("conflict");
        assert!(msg.contains("HTTPScaledObject ns/legacy"), "{msg}");
        let shadow = interceptor_route("ns", "legacy", on("b.example"));
        assert_eq!(route_conflict(&me, "ns", [&me, &shadow], [&so]), None);

        // Objects being deleted are left out.
        let mut leaving = twin.clone();
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        assert_eq!(route_conflict(&me, "ns", [&me, &leaving], []), None);
    }

    #[test]
    fn forbidden_lists_are_recognised() {
        let status =
            |code| Box::new(kube::core::Status::failure("no", "Forbidden").with_code(code));
        assert!(is_forbidden(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(403))
        )));
        assert!(is_forbidden(&watcher::Error::WatchError(status(403))));
        assert!(!is_forbidden(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(500))
        )));
        assert!(!is_forbidden(&watcher::Error::NoResourceVersion));
    }
}
