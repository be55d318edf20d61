//! The workload simulator: plays the Deployment controller, the kubelet and the EndpointSlice
//! controller for the local cluster.
//!
//! ```text
//! Simulator::start(client, config, commands)
//!   watches apps/v1 Deployments and core/v1 Services in all namespaces;
//!   per Deployment, keeps spec.replicas pods running, each a process (see `pod`) in its
//!     own test host (see `hosts`; 198.51.100.x:8080, or a free 127.0.0.1 port with
//!     E2E_LOOPBACK_PODS=1) → start delay → spawn with PORT and BIND_ADDRESS → probe readiness
//!     (readinessProbe.httpGet.path of the first container, else a TCP connect);
//!     a process that exits is restarted (its endpoint is not ready meanwhile);
//!   scale-down: pick pods (not ready first, then newest), write their endpoints as
//!     terminating, then SIGTERM, wait for exit (grace period, then SIGKILL), remove;
//!   writes Deployment status (replicas, readyReplicas, availableReplicas, ...) and one
//!     EndpointSlice per (Service, pod) (see `slices` for why).
//! ```
//!
//! What runs for a Deployment comes from the [`CommandTable`] (by `namespace/name`, then by
//! container image) or from the Deployment annotation [`COMMAND_ANNOTATION`] (a
//! whitespace-separated command line). A Deployment without a command gets no pods (logged).
//!
//! Simplifications: no Pod objects are written (consumers read EndpointSlices); only the
//! replica count of a Deployment is acted on (no rolling update when the template changes);
//! every service port maps to the pod's one port. Children are spawned with `kill_on_drop`, so
//! dropping the simulator (also while a test panics) kills them; [`Simulator::stop`] stops them
//! gracefully instead.

pub mod hosts;
pub mod pod;
pub mod slices;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

pub use hosts::PodNetwork;
pub use pod::{CommandSpec, PodEvent, Probe};
use slices::PodView;

/// Deployment annotation naming the command to run for its pods.
pub const COMMAND_ANNOTATION: &str = "e2e.keda-http/command";

/// Simulator timings.
#[derive(Clone, Debug, PartialEq)]
pub struct SimulatorConfig {
    /// Before each process start (image pull and boot).
    pub start_delay: Duration,
    /// Between readiness probes.
    pub probe_period: Duration,
    /// `SIGTERM` → `SIGKILL`; `None` uses the template's `terminationGracePeriodSeconds`
    /// (Kubernetes default 30 s).
    pub grace_period: Option<Duration>,
    /// After a process died, before its restart (plus the start delay).
    pub restart_delay: Duration,
    /// Let the processes write to this process's stdout/stderr.
    pub inherit_output: bool,
    /// Where pods run: test hosts, or loopback with `E2E_LOOPBACK_PODS=1`.
    pub network: PodNetwork,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            start_delay: Duration::from_millis(500),
            probe_period: Duration::from_millis(100),
            grace_period: None,
            restart_delay: Duration::from_millis(500),
            inherit_output: false,
            network: PodNetwork::from_env(),
        }
    }
}

/// Which command runs for which Deployment. Clones share the table.
#[derive(Clone, Debug, Default)]
pub struct CommandTable(Arc<RwLock<HashMap<String, CommandSpec>>>);

impl CommandTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `command` for the Deployment `namespace/name`.
    pub fn for_deployment(&self, namespace: &str, name: &str, command: CommandSpec) {
        self.insert(format!("deployment:{namespace}/{name}"), command);
    }

    /// Runs `command` for Deployments whose first container has this image: the exact image
    /// string, or its repository's last path segment without tag (`ghcr.io/x/hello:1` → `hello`).
    pub fn for_image(&self, image: &str, command: CommandSpec) {
        self.insert(format!("image:{image}"), command);
    }

    fn insert(&self, key: String, command: CommandSpec) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, command);
    }

    /// The command for `deployment`, if any.
    pub fn resolve(&self, deployment: &Deployment) -> Option<CommandSpec> {
        let table = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let ns = deployment.namespace().unwrap_or_default();
        if let Some(c) = table.get(&format!("deployment:{ns}/{}", deployment.name_any())) {
            return Some(c.clone());
        }
        if let Some(image) = first_container(deployment).and_then(|c| c.image.as_deref()) {
            for key in [image.to_owned(), image_short_name(image)] {
                if let Some(c) = table.get(&format!("image:{key}")) {
                    return Some(c.clone());
                }
            }
        }
        deployment
            .annotations()
            .get(COMMAND_ANNOTATION)
            .and_then(|line| CommandSpec::parse(line))
    }
}

/// `ghcr.io/org/hello:1.2@sha256:…` → `hello`.
fn image_short_name(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last).to_owned()
}

fn first_container(deployment: &Deployment) -> Option<&k8s_openapi::api::core::v1::Container> {
    deployment.spec.template.spec.as_ref()?.containers.first()
}

/// The running simulator. Dropping it kills every process it started.
pub struct Simulator {
    task: AbortOnDropHandle<()>,
    stop: mpsc::Sender<oneshot::Sender<()>>,
}

impl Simulator {
    /// Starts watching Deployments and Services through `client`.
    pub fn start(client: Client, config: SimulatorConfig, commands: CommandTable) -> Self {
        let (stop, stop_rx) = mpsc::channel(1);
        let (events, events_rx) = mpsc::unbounded_channel();
        let actor = Actor {
            client,
            config,
            commands,
            deployments: BTreeMap::new(),
            services: BTreeMap::new(),
            owners: HashMap::new(),
            written_slices: BTreeMap::new(),
            written_status: BTreeMap::new(),
            pending_stops: Vec::new(),
            events,
            stopping: false,
        };
        Self {
            task: AbortOnDropHandle::new(tokio::spawn(actor.run(events_rx, stop_rx))),
            stop,
        }
    }

    /// Stops every pod gracefully (terminating endpoints, `SIGTERM`, grace period), then ends.
    pub async fn stop(self) {
        let (done, stopped) = oneshot::channel();
        if self.stop.send(done).await.is_ok() {
            let _ = stopped.await;
        }
        self.task.abort();
    }
}

type Key = (String, String);

struct Pod {
    view: PodView,
    stop: Option<oneshot::Sender<()>>,
    _task: AbortOnDropHandle<()>,
}

struct Dep {
    obj: Deployment,
    deleted: bool,
    pods: Vec<Pod>,
    warned_no_command: bool,
}

struct Actor {
    client: Client,
    config: SimulatorConfig,
    commands: CommandTable,
    deployments: BTreeMap<Key, Dep>,
    services: BTreeMap<Key, Service>,
    /// Pod name → its Deployment.
    owners: HashMap<String, Key>,
    /// (namespace, slice name) → the slice last written.
    written_slices: BTreeMap<Key, Value>,
    /// Deployment → the status patch last written.
    written_status: BTreeMap<Key, Value>,
    /// Stop signals to send once the terminating endpoints are written.
    pending_stops: Vec<oneshot::Sender<()>>,
    events: mpsc::UnboundedSender<(String, PodEvent)>,
    stopping: bool,
}

impl Actor {
    async fn run(
        mut self,
        mut pod_events: mpsc::UnboundedReceiver<(String, PodEvent)>,
        mut stop_rx: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        let deployments = watcher::watcher(
            Api::<Deployment>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        let services = watcher::watcher(
            Api::<Service>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        let mut deployments = deployments.fuse();
        let mut services = services.fuse();
        let mut seen_deployments = BTreeSet::new();
        let mut seen_services = BTreeSet::new();
        let mut done: Option<oneshot::Sender<()>> = None;
        loop {
            tokio::select! {
                Some(event) = deployments.next(), if !self.stopping => {
                    self.on_deployment(event, &mut seen_deployments);
                }
                Some(event) = services.next(), if !self.stopping => {
                    self.on_service(event, &mut seen_services);
                }
                Some((pod, event)) = pod_events.recv() => self.on_pod(&pod, event),
                Some(reply) = stop_rx.recv(), if !self.stopping => {
                    self.stopping = true;
                    done = Some(reply);
                    let keys: Vec<Key> = self.deployments.keys().cloned().collect();
                    for key in keys {
                        if let Some(dep) = self.deployments.get_mut(&key) {
                            dep.deleted = true;
                        }
                        self.reconcile_pods(&key);
                    }
                }
            }
            self.write_outputs().await;
            for stop in self.pending_stops.drain(..) {
                let _ = stop.send(());
            }
            if self.stopping && self.deployments.values().all(|d| d.pods.is_empty()) {
                if let Some(reply) = done.take() {
                    let _ = reply.send(());
                }
                return;
            }
        }
    }

    fn on_deployment(
        &mut self,
        event: Result<Event<Deployment>, watcher::Error>,
        seen: &mut BTreeSet<Key>,
    ) {
        match event {
            Ok(Event::Apply(d) | Event::InitApply(d)) => {
                let key = key_of(&d);
                seen.insert(key.clone());
                let dep = self.deployments.entry(key.clone()).or_insert_with(|| Dep {
                    obj: d.clone(),
                    deleted: false,
                    pods: Vec::new(),
                    warned_no_command: false,
                });
                dep.obj = d;
                dep.deleted = false;
                self.reconcile_pods(&key);
            }
            Ok(Event::Delete(d)) => self.delete_deployment(&key_of(&d)),
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitDone) => {
                let gone: Vec<Key> = self
                    .deployments
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.delete_deployment(&key);
                }
            }
            Err(error) => tracing::warn!(%error, "Deployment watch failed"),
        }
    }

    fn delete_deployment(&mut self, key: &Key) {
        if let Some(dep) = self.deployments.get_mut(key) {
            dep.deleted = true;
            self.written_status.remove(key);
            self.reconcile_pods(key);
        }
    }

    fn on_service(
        &mut self,
        event: Result<Event<Service>, watcher::Error>,
        seen: &mut BTreeSet<Key>,
    ) {
        match event {
            Ok(Event::Apply(s) | Event::InitApply(s)) => {
                let key = (s.namespace().unwrap_or_default(), s.name_any());
                seen.insert(key.clone());
                self.services.insert(key, s);
            }
            Ok(Event::Delete(s)) => {
                self.services
                    .remove(&(s.namespace().unwrap_or_default(), s.name_any()));
            }
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitDone) => self.services.retain(|k, _| seen.contains(k)),
            Err(error) => tracing::warn!(%error, "Service watch failed"),
        }
    }

    fn on_pod(&mut self, name: &str, event: PodEvent) {
        let Some(key) = self.owners.get(name).cloned() else {
            return;
        };
        let Some(dep) = self.deployments.get_mut(&key) else {
            return;
        };
        let Some(index) = dep.pods.iter().position(|p| p.view.name == name) else {
            return;
        };
        match event {
            PodEvent::Started(addr) => {
                let view = &mut dep.pods[index].view;
                view.addr = Some(addr);
                view.ready = false;
            }
            PodEvent::Ready(ready) => dep.pods[index].view.ready = ready,
            PodEvent::Exited(_) => dep.pods[index].view.ready = false,
            PodEvent::Gone => {
                dep.pods.remove(index);
                self.owners.remove(name);
                if dep.deleted && dep.pods.is_empty() {
                    self.deployments.remove(&key);
                }
            }
        }
    }

    /// Starts or stops pods so the live ones match `spec.replicas` (0 once deleted).
    fn reconcile_pods(&mut self, key: &Key) {
        let Some(dep) = self.deployments.get_mut(key) else {
            return;
        };
        let desired = if dep.deleted {
            0
        } else {
            dep.obj.spec.replicas.unwrap_or(1).max(0)
        };
        let desired = usize::try_from(desired).unwrap_or(0);
        let views: Vec<PodView> = dep.pods.iter().map(|p| p.view.clone()).collect();
        let live = views.iter().filter(|p| !p.terminating).count();
        if live > desired {
            for victim in slices::victims(&views, desired) {
                if let Some(pod) = dep.pods.iter_mut().find(|p| p.view.name == victim) {
                    pod.view.terminating = true;
                    if let Some(stop) = pod.stop.take() {
                        self.pending_stops.push(stop);
                    }
                }
            }
        } else if live < desired {
            let Some(command) = self.commands.resolve(&dep.obj) else {
                if !dep.warned_no_command {
                    dep.warned_no_command = true;
                    tracing::warn!(deployment = %key.1, namespace = %key.0,
                        "no command for this Deployment; it gets no pods");
                }
                return;
            };
            for _ in live..desired {
                let name = format!("{}-{}", key.1, short_id());
                let spec = pod_spec(&self.config, &dep.obj, &name, command.clone());
                let (stop, stop_rx) = oneshot::channel();
                let task = tokio::spawn(pod::run(spec, self.events.clone(), stop_rx));
                self.owners.insert(name.clone(), key.clone());
                dep.pods.push(Pod {
                    view: PodView {
                        name,
                        addr: None,
                        ready: false,
                        terminating: false,
                    },
                    stop: Some(stop),
                    _task: AbortOnDropHandle::new(task),
                });
            }
        }
    }

    /// Writes what changed: EndpointSlices, then Deployment status.
    async fn write_outputs(&mut self) {
        let mut desired_slices: BTreeMap<Key, Value> = BTreeMap::new();
        for ((ns, _), service) in &self.services {
            for ((dep_ns, _), dep) in &self.deployments {
                if dep_ns != ns || !slices::selects(service, &template_labels(&dep.obj)) {
                    continue;
                }
                for pod in &dep.pods {
                    if let Some(slice) = slices::endpoint_slice(service, &pod.view) {
                        let name = slice["metadata"]["name"].as_str().unwrap_or_default();
                        desired_slices.insert((ns.clone(), name.to_owned()), slice);
                    }
                }
            }
        }
        let stale: Vec<Key> = self
            .written_slices
            .keys()
            .filter(|k| !desired_slices.contains_key(*k))
            .cloned()
            .collect();
        for (key, slice) in desired_slices {
            if self.written_slices.get(&key) == Some(&slice) {
                continue;
            }
            match self.put_slice(&key, &slice).await {
                Ok(()) => {
                    self.written_slices.insert(key, slice);
                }
                Err(error) => {
                    tracing::warn!(%error, slice = %key.1, "writing EndpointSlice failed")
                }
            }
        }
        for key in stale {
            let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.0);
            match api.delete(&key.1, &DeleteParams::default()).await {
                Ok(_) => {
                    self.written_slices.remove(&key);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    self.written_slices.remove(&key);
                }
                Err(error) => {
                    tracing::warn!(%error, slice = %key.1, "deleting EndpointSlice failed")
                }
            }
        }
        let mut statuses = Vec::new();
        for (key, dep) in &self.deployments {
            if dep.deleted {
                continue;
            }
            let views: Vec<PodView> = dep.pods.iter().map(|p| p.view.clone()).collect();
            let desired = dep.obj.spec.replicas.unwrap_or(1);
            let status = slices::deployment_status(
                slices::counts(&views),
                desired,
                dep.obj.metadata.generation,
            );
            if self.written_status.get(key) != Some(&status) {
                statuses.push((key.clone(), status));
            }
        }
        for (key, status) in statuses {
            let api: Api<Deployment> = Api::namespaced(self.client.clone(), &key.0);
            match api
                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                Ok(_) => {
                    self.written_status.insert(key, status);
                }
                Err(error) => tracing::warn!(%error, deployment = %key.1, "writing status failed"),
            }
        }
    }

    async fn put_slice(&self, key: &Key, slice: &Value) -> Result<(), kube::Error> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.0);
        match api
            .patch(&key.1, &PatchParams::default(), &Patch::Merge(slice))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let typed: EndpointSlice =
                    serde_json::from_value(slice.clone()).map_err(kube::Error::SerdeError)?;
                api.create(&PostParams::default(), &typed).await.map(|_| ())
            }
            Err(error) => Err(error),
        }
    }
}

fn pod_spec(
    config: &SimulatorConfig,
    deployment: &Deployment,
    name: &str,
    command: CommandSpec,
) -> pod::PodSpec {
    let container = first_container(deployment);
    let probe = container
        .and_then(|c| c.readiness_probe.as_ref())
        .and_then(|p| p.http_get.as_ref())
        .map_or(Probe::Tcp, |http| {
            Probe::Http(http.path.clone().unwrap_or_else(|| "/".to_owned()))
        });
    let template_env = container
        .and_then(|c| c.env.as_ref())
        .map(|env| {
            env.iter()
                .filter_map(|e| e.value.as_ref().map(|v| (e.name.clone(), v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let template_grace = deployment
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
    pod::PodSpec {
        name: name.to_owned(),
        command,
        template_env,
        probe,
        start_delay: config.start_delay,
        probe_period: config.probe_period,
        grace_period: config
            .grace_period
            .or(template_grace)
            .unwrap_or(Duration::from_secs(30)),
        restart_delay: config.restart_delay,
        inherit_output: config.inherit_output,
        network: config.network,
    }
}

fn key_of(d: &Deployment) -> Key {
    (d.namespace().unwrap_or_default(), d.name_any())
}

fn template_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// Five lowercase hex characters, like a pod name suffix.
fn short_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..5].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str, annotation: Option<&str>) -> Deployment {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "app", "namespace": "ns" },
            "spec": {
                "selector": {},
                "template": { "spec": { "containers": [{ "name": "c", "image": image }] } }
            }
        }))
        .unwrap();
        if let Some(line) = annotation {
            d.annotations_mut()
                .insert(COMMAND_ANNOTATION.to_owned(), line.to_owned());
        }
        d
    }

    #[test]
    fn commands_resolve_by_deployment_then_image_then_annotation() {
        let table = CommandTable::new();
        assert_eq!(table.resolve(&deployment("x", None)), None);
        assert_eq!(
            table.resolve(&deployment("x", Some("/bin/echo hi"))),
            CommandSpec::parse("/bin/echo hi")
        );
        table.for_image("hello", CommandSpec::new("/bin/hello"));
        assert_eq!(
            table.resolve(&deployment("ghcr.io/org/hello:1.0", Some("/bin/echo"))),
            Some(CommandSpec::new("/bin/hello"))
        );
        table.for_deployment("ns", "app", CommandSpec::new("/bin/app"));
        assert_eq!(
            table.resolve(&deployment("hello", None)),
            Some(CommandSpec::new("/bin/app"))
        );
    }

    #[test]
    fn image_short_names() {
        assert_eq!(image_short_name("hello"), "hello");
        assert_eq!(image_short_name("ghcr.io/org/hello:1.2"), "hello");
        assert_eq!(image_short_name("localhost:5000/hello@sha256:abc"), "hello");
    }
}
