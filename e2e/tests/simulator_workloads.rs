//! The workload simulator against the in-memory API server, running the `e2e-backend` binary:
//! Deployments scale up and down with processes, Deployment status and EndpointSlices follow
//! with the right conditions (terminating before removal), a crashed process is restarted with
//! its endpoint not ready meanwhile, and every process ends on `stop` and on drop.
// Helpers outside `#[test]` fns unwrap too: any failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use keda_http_e2e::simulator::{CommandSpec, CommandTable, PodNetwork, Simulator, SimulatorConfig};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use kube_standin::{LocalApiServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Endpoint conditions (ready, serving, terminating).
type Conditions = (bool, bool, bool);
/// Slice name and its conditions; `None` for a deletion.
type History = Arc<Mutex<Vec<(String, Option<Conditions>)>>>;

const BOUND: Duration = Duration::from_secs(60);
const BACKEND: &str = env!("CARGO_BIN_EXE_e2e-backend");

fn config() -> SimulatorConfig {
    SimulatorConfig {
        start_delay: Duration::from_millis(50),
        probe_period: Duration::from_millis(50),
        grace_period: Some(Duration::from_secs(10)),
        restart_delay: Duration::from_millis(100),
        inherit_output: false,
        ..SimulatorConfig::default()
    }
}

struct Cluster {
    _server: LocalApiServer,
    client: Client,
    sim: Option<Simulator>,
    deployments: Api<Deployment>,
    slices: Api<EndpointSlice>,
    /// Every EndpointSlice version the watch delivered: (name, endpoint conditions), and
    /// `None` conditions for a deletion.
    history: History,
    _watch: tokio_util::task::AbortOnDropHandle<()>,
}

fn conditions(slice: &EndpointSlice) -> Option<Conditions> {
    let c = slice.endpoints.as_ref()?.first()?.conditions.as_ref()?;
    Some((
        c.ready.unwrap_or(false),
        c.serving.unwrap_or(false),
        c.terminating.unwrap_or(false),
    ))
}

async fn cluster(replicas: i32) -> Cluster {
    let server = LocalApiServer::start_with(ServerConfig {
        allow_loopback_endpoints: config().network == PodNetwork::Loopback,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let client = server.client().await.unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    let history = Arc::new(Mutex::new(Vec::new()));
    let recorded = history.clone();
    let mut events = watcher::watcher(slices.clone(), watcher::Config::default()).boxed();
    let watch = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let mut h = recorded.lock().unwrap();
            match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    h.push((s.name_any(), conditions(&s)));
                }
                Ok(watcher::Event::Delete(s)) => h.push((s.name_any(), None)),
                _ => {}
            }
        }
    });

    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": { "name": "app" },
                "spec": {
                    "selector": { "app": "app" },
                    "ports": [{ "name": "http", "port": 8080, "targetPort": "http" }]
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // A Service selecting something else gets no slices.
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": { "name": "other" },
                "spec": { "selector": { "app": "other" }, "ports": [{ "port": 80 }] }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": { "name": "app" },
                "spec": {
                    "replicas": replicas,
                    "selector": { "matchLabels": { "app": "app" } },
                    "template": {
                        "metadata": { "labels": { "app": "app" } },
                        "spec": { "containers": [{
                            "name": "app",
                            "image": "e2e-backend",
                            "ports": [{ "name": "http", "containerPort": 8080 }],
                            "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" } }
                        }] }
                    }
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let commands = CommandTable::new();
    commands.for_image("e2e-backend", CommandSpec::new(BACKEND));
    let sim = Simulator::start(client.clone(), config(), commands);
    Cluster {
        _server: server,
        client,
        sim: Some(sim),
        deployments,
        slices,
        history,
        _watch: tokio_util::task::AbortOnDropHandle::new(watch),
    }
}

impl Cluster {
    async fn scale(&self, replicas: i32) {
        self.deployments
            .patch_scale(
                "app",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } })),
            )
            .await
            .unwrap();
    }

    /// The slices of Service `app`: name → (pod address, (ready, serving, terminating)).
    async fn app_slices(&self) -> BTreeMap<String, (SocketAddr, Conditions)> {
        let list = self
            .slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=app"))
            .await
            .unwrap();
        list.items
            .iter()
            .map(|s| {
                let port = u16::try_from(s.ports.as_ref().unwrap()[0].port.unwrap()).unwrap();
                let ip: std::net::IpAddr = s.endpoints.as_ref().unwrap()[0].addresses[0]
                    .parse()
                    .unwrap();
                (
                    s.name_any(),
                    (SocketAddr::new(ip, port), conditions(s).unwrap()),
                )
            })
            .collect()
    }

    /// Polls until `n` slices of `app` are all ready and the status says `n` ready replicas.
    async fn wait_ready(&self, n: usize) -> BTreeMap<String, (SocketAddr, Conditions)> {
        let poll = async {
            loop {
                let slices = self.app_slices().await;
                let status = self.deployments.get("app").await.unwrap().status;
                let ready = status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                let replicas = status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                if slices.len() == n
                    && slices.values().all(|(_, c)| *c == (true, true, false))
                    && ready == i32::try_from(n).unwrap()
                    && replicas == i32::try_from(n).unwrap()
                {
                    return slices;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(BOUND, poll)
            .await
            .unwrap_or_else(|_| panic!("never {n} ready"))
    }
}

/// `GET path` on a pod's address; `None` if nothing answers (within a few seconds: a test
/// host that is gone does not answer ARP).
async fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let connect = tokio::net::TcpStream::connect(addr);
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .ok()?
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// Polls until nothing listens on `port` (a pod address).
async fn wait_closed(port: SocketAddr) {
    let poll = async {
        while get(port, "/healthz").await.is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(BOUND, poll)
        .await
        .unwrap_or_else(|_| panic!("port {port} still open"));
}

#[tokio::test]
async fn scale_up_and_down_with_slices_following() {
    let mut c = cluster(0).await;
    c.scale(2).await;
    let two = c.wait_ready(2).await;
    // Each slice points at its own live process.
    for (port, _) in two.values() {
        let body = get(*port, "/").await.expect("pod answers");
        assert!(body.ends_with(&port.to_string()), "{body}");
    }
    assert!(
        c.slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=other"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    c.scale(1).await;
    let one = c.wait_ready(1).await;
    let (removed, (removed_port, _)) = two.iter().find(|(k, _)| !one.contains_key(*k)).unwrap();
    wait_closed(*removed_port).await;
    // The removed slice went terminating (not ready) before it was deleted.
    let history: Vec<_> = c
        .history
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name == removed)
        .map(|(_, c)| *c)
        .collect();
    let terminating_at = history
        .iter()
        .position(|c| matches!(c, Some((false, _, true))))
        .unwrap_or_else(|| panic!("never terminating: {history:?}"));
    let deleted_at = history.iter().position(Option::is_none).unwrap();
    assert!(terminating_at < deleted_at, "{history:?}");

    c.scale(0).await;
    let poll = async {
        while !c.app_slices().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(BOUND, poll).await.unwrap();
    let (_, (last_port, _)) = one.into_iter().next().unwrap();
    wait_closed(last_port).await;
    c.sim.take().unwrap().stop().await;
}

#[tokio::test]
async fn crashed_process_is_restarted_and_not_ready_meanwhile() {
    let mut c = cluster(1).await;
    let before = c.wait_ready(1).await;
    let (name, (port, _)) = before.into_iter().next().unwrap();
    // Only what happens after the crash counts: the pod's first start was not ready too.
    // Wait until the watch has delivered the ready state, so that start is all behind us.
    let caught_up = async {
        loop {
            let ready_seen = c
                .history
                .lock()
                .unwrap()
                .iter()
                .any(|(n, cond)| *n == name && matches!(cond, Some((true, true, false))));
            if ready_seen {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(BOUND, caught_up)
        .await
        .expect("the watch never saw the pod ready");
    let seen_before_crash = c.history.lock().unwrap().len();
    // The process exits at once; the connection just drops.
    let _ = get(port, "/crash").await;
    // Its endpoint goes not ready (not serving, not terminating) while it restarts...
    let not_ready = async {
        loop {
            let seen = c
                .history
                .lock()
                .unwrap()
                .iter()
                .skip(seen_before_crash)
                .any(|(n, cond)| *n == name && matches!(cond, Some((false, false, false))));
            if seen {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(BOUND, not_ready)
        .await
        .expect("the endpoint never went not-ready");
    // ...then comes back ready under the same pod name, on a new process.
    let after = c.wait_ready(1).await;
    let (new_port, _) = after.get(&name).unwrap_or_else(|| panic!("{after:?}"));
    assert!(get(*new_port, "/healthz").await.is_some());
    c.sim.take().unwrap().stop().await;
}

#[tokio::test]
async fn dropping_the_simulator_kills_its_processes() {
    let mut c = cluster(2).await;
    let slices = c.wait_ready(2).await;
    drop(c.sim.take());
    for (port, _) in slices.values() {
        wait_closed(*port).await;
    }
    // The API server is still up; only the processes are gone.
    let _ = c.client.apiserver_version().await.unwrap();
}

#[tokio::test]
async fn stop_terminates_gracefully_and_marks_endpoints_terminating() {
    let mut c = cluster(1).await;
    let slices = c.wait_ready(1).await;
    c.sim.take().unwrap().stop().await;
    let (name, (port, _)) = slices.into_iter().next().unwrap();
    // `stop` returns after the processes exited.
    assert!(get(port, "/healthz").await.is_none());
    let terminating = c
        .history
        .lock()
        .unwrap()
        .iter()
        .any(|(n, cond)| *n == name && matches!(cond, Some((false, true, true))));
    // The watch may lag the writes; poll the history briefly.
    if !terminating {
        let poll =
            async {
                loop {
                    let seen =
                        c.history.lock().unwrap().iter().any(|(n, cond)| {
                            *n == name && matches!(cond, Some((false, true, true)))
                        });
                    if seen {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
        tokio::time::timeout(BOUND, poll).await.unwrap();
    }
}
