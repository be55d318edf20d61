//! The KEDA stand-in: drives an external scaler over gRPC as KEDA does (compat §5.2) and
//! plays the HPA KEDA creates, writing `Deployment/scale` and the ScaledObject's conditions.
//!
//! ```text
//! KedaStandIn::start(client, config, addresses, connector)
//!   watches keda.sh/v1alpha1 ScaledObjects in all namespaces; per object with `external` or
//!   `external-push` triggers it runs one loop (see `runner`):
//!     - external-push: a StreamIsActive stream, reopened with backoff (2 s doubling to 1 min);
//!       each message goes to the scale executor at once;
//!     - every pollingInterval: GetMetricSpec, GetMetrics, IsActive → scale executor;
//!     - every HPA sync period: GetMetricSpec, GetMetrics → HPA formula (see `decision`).
//! ```
//!
//! Scaler addresses (`svc.ns:port`) are resolved through an [`AddressTable`] the harness fills
//! with the loopback addresses of the real processes. Only `apps/v1` `Deployment` targets are
//! supported. A spec change restarts the object's loop (with fresh HPA history); status-only
//! changes, including the stand-in's own condition writes, do not.

pub mod decision;
pub mod fake;
pub mod grpc;
pub mod runner;
pub mod scaler;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use keda_http_api::scaled_object::{ScaledObject, ScaledObjectSpec};
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use decision::{Bounds, DEFAULT_COOLDOWN, DEFAULT_MAX_REPLICAS, ExecutorSpec, HpaConfig};
use runner::{Report, ScaleTarget, TargetError, Timing, Trigger};
use scaler::{ScaledObjectRef, ScalerConnector};

/// KEDA's default `pollingInterval`.
pub const DEFAULT_POLLING_INTERVAL: Duration = Duration::from_secs(30);

/// The stand-in's timings. The defaults are KEDA's and the HPA's; tests shorten them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KedaConfig {
    /// Replaces every ScaledObject's `pollingInterval` when set.
    pub polling_interval: Option<Duration>,
    /// The HPA sync period (kube-controller-manager default 15 s).
    pub hpa_sync_period: Duration,
    /// Tolerance and stabilization windows.
    pub hpa: HpaConfig,
    /// First reconnect delay of `StreamIsActive` (KEDA: 2 s).
    pub stream_backoff_initial: Duration,
    /// Reconnect delay cap (KEDA: 1 min).
    pub stream_backoff_max: Duration,
}

impl Default for KedaConfig {
    fn default() -> Self {
        Self {
            polling_interval: None,
            hpa_sync_period: Duration::from_secs(15),
            hpa: HpaConfig::default(),
            stream_backoff_initial: Duration::from_secs(2),
            stream_backoff_max: Duration::from_secs(60),
        }
    }
}

impl KedaConfig {
    /// Timings for tests and the demo: 1 s polls and HPA syncs, 5 s scale-down window,
    /// reconnects from 200 ms.
    pub fn fast() -> Self {
        Self {
            polling_interval: Some(Duration::from_secs(1)),
            hpa_sync_period: Duration::from_secs(1),
            hpa: HpaConfig {
                scale_down_stabilization: Duration::from_secs(5),
                ..HpaConfig::default()
            },
            stream_backoff_initial: Duration::from_millis(200),
            stream_backoff_max: Duration::from_secs(2),
        }
    }
}

/// Maps in-cluster scaler addresses (`svc.ns:port`, also `svc.ns.svc[.cluster.local]:port`) to
/// the addresses the processes really listen on. Unmapped addresses are used as they are.
#[derive(Clone, Debug, Default)]
pub struct AddressTable(Arc<RwLock<HashMap<String, String>>>);

impl AddressTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `from` (e.g. `keda-add-ons-http-external-scaler.keda:9090`) to `to`
    /// (e.g. `127.0.0.1:40123`).
    pub fn insert(&self, from: &str, to: &str) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(normalize(from), to.to_owned());
    }

    /// The address to dial for `address`.
    pub fn resolve(&self, address: &str) -> String {
        let table = self.0.read().unwrap_or_else(PoisonError::into_inner);
        table
            .get(&normalize(address))
            .cloned()
            .unwrap_or_else(|| address.to_owned())
    }
}

/// `svc.ns.svc.cluster.local:port` and `svc.ns.svc:port` → `svc.ns:port`.
fn normalize(address: &str) -> String {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
    let host = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    if port.is_empty() {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

/// The running stand-in. Dropping it stops every loop.
pub struct KedaStandIn {
    task: AbortOnDropHandle<()>,
}

impl KedaStandIn {
    /// Starts watching ScaledObjects through `client`.
    pub fn start(
        client: Client,
        config: KedaConfig,
        addresses: AddressTable,
        connector: Arc<dyn ScalerConnector>,
    ) -> Self {
        let controller = Controller {
            client,
            config,
            addresses,
            connector,
            loops: HashMap::new(),
        };
        Self {
            task: AbortOnDropHandle::new(tokio::spawn(controller.run())),
        }
    }

    /// Stops every loop and waits for the watcher task to end.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

struct Controller {
    client: Client,
    config: KedaConfig,
    addresses: AddressTable,
    connector: Arc<dyn ScalerConnector>,
    /// (namespace, name) → (the spec the loop runs with, the loop).
    loops: HashMap<(String, String), (ScaledObjectSpec, AbortOnDropHandle<()>)>,
}

impl Controller {
    async fn run(mut self) {
        let api: Api<ScaledObject> = Api::all(self.client.clone());
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut seen_in_relist = Vec::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(so) | Event::InitApply(so)) => {
                    seen_in_relist.push(key(&so));
                    self.apply(&so);
                }
                Ok(Event::Delete(so)) => {
                    self.loops.remove(&key(&so));
                }
                Ok(Event::Init) => seen_in_relist.clear(),
                Ok(Event::InitDone) => {
                    let seen: std::collections::HashSet<_> = seen_in_relist.drain(..).collect();
                    self.loops.retain(|k, _| seen.contains(k));
                }
                Err(error) => tracing::warn!(%error, "ScaledObject watch failed"),
            }
        }
        // `default_backoff` retries forever, so the stream does not end; if it did, the loops
        // would be dropped with `self`.
    }

    fn apply(&mut self, so: &ScaledObject) {
        let k = key(so);
        if self.loops.get(&k).is_some_and(|(spec, _)| *spec == so.spec) {
            return;
        }
        self.loops.remove(&k);
        if so.metadata.deletion_timestamp.is_some() {
            return;
        }
        let target = Arc::new(KubeTarget {
            deployments: Api::namespaced(self.client.clone(), &k.0),
            scaled_objects: Api::namespaced(self.client.clone(), &k.0),
            deployment: so.spec.scale_target_ref.name.clone(),
            scaled_object: k.1.clone(),
        });
        let setup = self.loop_for(so);
        let task = tokio::spawn(async move {
            match setup {
                Ok(Some(args)) => {
                    runner::run(
                        args.triggers,
                        args.spec,
                        args.hpa,
                        args.timing,
                        target,
                        args.created,
                    )
                    .await;
                }
                Ok(None) => {}
                Err(message) => {
                    tracing::warn!(%message, "ScaledObject not usable");
                    let report = Report {
                        ready: Err(message),
                        active: false,
                    };
                    if let Err(error) = target.report(&report).await {
                        tracing::warn!(%error, "writing the ScaledObject status failed");
                    }
                }
            }
        });
        self.loops
            .insert(k, (so.spec.clone(), AbortOnDropHandle::new(task)));
    }

    /// The loop's arguments; `Ok(None)` when the object has no external trigger.
    fn loop_for(&self, so: &ScaledObject) -> Result<Option<LoopArgs>, String> {
        let spec = &so.spec;
        let target = &spec.scale_target_ref;
        let kind_ok = target.kind.as_deref().is_none_or(|k| k == "Deployment");
        let version_ok = target.api_version.as_deref().is_none_or(|v| v == "apps/v1");
        if !(kind_ok && version_ok) {
            return Err("only apps/v1 Deployment scale targets are supported".to_owned());
        }
        let mut triggers = Vec::new();
        for trigger in &spec.triggers {
            let push = match trigger.type_.as_str() {
                "external-push" => true,
                "external" => false,
                _ => continue,
            };
            let address = trigger
                .metadata
                .get("scalerAddress")
                .ok_or_else(|| "trigger has no scalerAddress".to_owned())?;
            let scaler = self
                .connector
                .connect(&self.addresses.resolve(address))
                .map_err(|e| e.to_string())?;
            triggers.push(Trigger {
                push,
                so_ref: ScaledObjectRef {
                    name: so.name_any(),
                    namespace: so.namespace().unwrap_or_default(),
                    scaler_metadata: trigger.metadata.clone(),
                },
                value_metric: trigger.metric_type.as_deref() == Some("Value"),
                scaler,
            });
        }
        if triggers.is_empty() {
            return Ok(None);
        }
        let min = spec.min_replica_count.unwrap_or(0).max(0);
        let executor = ExecutorSpec {
            bounds: Bounds {
                min,
                max: spec
                    .max_replica_count
                    .unwrap_or(DEFAULT_MAX_REPLICAS)
                    .max(min),
            },
            cooldown: seconds(spec.cooldown_period).unwrap_or(DEFAULT_COOLDOWN),
            initial_cooldown: seconds(spec.initial_cooldown_period).unwrap_or(Duration::ZERO),
        };
        let polling = self
            .config
            .polling_interval
            .unwrap_or_else(|| seconds(spec.polling_interval).unwrap_or(DEFAULT_POLLING_INTERVAL));
        Ok(Some(LoopArgs {
            triggers,
            spec: executor,
            hpa: self.config.hpa,
            timing: Timing {
                polling,
                hpa_sync: self.config.hpa_sync_period,
                backoff_initial: self.config.stream_backoff_initial,
                backoff_max: self.config.stream_backoff_max,
            },
            created: created_at(so),
        }))
    }
}

struct LoopArgs {
    triggers: Vec<Trigger>,
    spec: ExecutorSpec,
    hpa: HpaConfig,
    timing: Timing,
    created: Instant,
}

fn key(so: &ScaledObject) -> (String, String) {
    (so.namespace().unwrap_or_default(), so.name_any())
}

fn seconds(value: Option<i32>) -> Option<Duration> {
    value.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
}

/// The object's creation time on the monotonic clock (now, if unknown or in the future).
fn created_at(so: &ScaledObject) -> Instant {
    let now = Instant::now();
    let Some(created) = so.metadata.creation_timestamp.as_ref() else {
        return now;
    };
    let age = jiff::Timestamp::now().duration_since(created.0);
    let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
    now.checked_sub(age).unwrap_or(now)
}

/// A Deployment's scale subresource and a ScaledObject's status, through the API.
struct KubeTarget {
    deployments: Api<Deployment>,
    scaled_objects: Api<ScaledObject>,
    deployment: String,
    scaled_object: String,
}

impl ScaleTarget for KubeTarget {
    fn replicas(&self) -> BoxFuture<'_, Result<i32, TargetError>> {
        async move {
            let scale = self
                .deployments
                .get_scale(&self.deployment)
                .await
                .map_err(|e| TargetError(format!("get {}/scale: {e}", self.deployment)))?;
            Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
        }
        .boxed()
    }

    fn scale(&self, replicas: i32) -> BoxFuture<'_, Result<(), TargetError>> {
        async move {
            let patch = serde_json::json!({ "spec": { "replicas": replicas } });
            self.deployments
                .patch_scale(
                    &self.deployment,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|e| TargetError(format!("patch {}/scale: {e}", self.deployment)))?;
            Ok(())
        }
        .boxed()
    }

    fn report(&self, report: &Report) -> BoxFuture<'_, Result<(), TargetError>> {
        let conditions = conditions(report);
        let active = report.active;
        async move {
            let mut status = BTreeMap::new();
            status.insert(
                "conditions",
                serde_json::to_value(conditions).unwrap_or_default(),
            );
            if active {
                status.insert(
                    "lastActiveTime",
                    serde_json::Value::String(jiff::Timestamp::now().to_string()),
                );
            }
            let patch = serde_json::json!({ "status": status });
            self.scaled_objects
                .patch_status(
                    &self.scaled_object,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|e| TargetError(format!("patch {}/status: {e}", self.scaled_object)))?;
            Ok(())
        }
        .boxed()
    }
}

/// KEDA's Ready and Active conditions for a report.
pub fn conditions(report: &Report) -> Vec<keda_http_api::scaled_object::ScaledObjectCondition> {
    use keda_http_api::scaled_object::ScaledObjectCondition as C;
    let ready = match &report.ready {
        Ok(()) => C {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("ScaledObjectReady".into()),
            message: Some("ScaledObject is defined correctly and is ready for scaling".into()),
        },
        Err(message) => C {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("TriggerError".into()),
            message: Some(message.clone()),
        },
    };
    let active = if report.active {
        C {
            type_: "Active".into(),
            status: "True".into(),
            reason: Some("ScalerActive".into()),
            message: Some("Scaling is performed because triggers are active".into()),
        }
    } else {
        C {
            type_: "Active".into(),
            status: "False".into(),
            reason: Some("ScalerNotActive".into()),
            message: Some("Scaling is not performed because triggers are not active".into()),
        }
    };
    vec![ready, active]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_table_maps_service_addresses() {
        let table = AddressTable::new();
        table.insert(
            "keda-add-ons-http-external-scaler.keda:9090",
            "127.0.0.1:4000",
        );
        for addr in [
            "keda-add-ons-http-external-scaler.keda:9090",
            "keda-add-ons-http-external-scaler.keda.svc:9090",
            "keda-add-ons-http-external-scaler.keda.svc.cluster.local:9090",
        ] {
            assert_eq!(table.resolve(addr), "127.0.0.1:4000", "{addr}");
        }
        assert_eq!(table.resolve("other.keda:9090"), "other.keda:9090");
    }

    #[test]
    fn conditions_follow_the_report() {
        let c = conditions(&Report {
            ready: Err("boom".into()),
            active: true,
        });
        assert_eq!(c[0].status, "False");
        assert_eq!(c[0].message.as_deref(), Some("boom"));
        assert_eq!(c[1].type_, "Active");
        assert_eq!(c[1].status, "True");
    }
}
