//! Helpers shared by the end-to-end scenarios (`tests/scenario_*.rs`): starting the harness
//! with the product binaries built, rendering manifests with `helm template`, sending
//! requests through the interceptor proxy, awaiting API state and open-loop load.
//!
//! Every wait is bounded polling of observable state (API objects, the interceptor's admin
//! `/routes`), never a bare sleep standing in for an event.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use keda_http_e2e::harness::{Harness, HarnessConfig};
use keda_http_e2e::simulator::{CommandSpec, SimulatorConfig};
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;
use tokio::net::TcpStream;

/// Upper bound of any single wait.
pub const BOUND: Duration = Duration::from_secs(90);

/// The protocol backend (WebSocket, gRPC over h2c).
pub const ECHO: &str = env!("CARGO_BIN_EXE_e2e-echo");

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Set to `1` to let a scenario whose prerequisite (helm) is missing pass with a `SKIP:`
/// message instead of failing.
pub const ENV_ALLOW_SKIP: &str = "E2E_ALLOW_SKIP";

/// Fails the test with `why`, or with `E2E_ALLOW_SKIP=1` prints `SKIP: why` and returns.
pub fn missing_prerequisite(why: &str) {
    if std::env::var(ENV_ALLOW_SKIP).is_ok_and(|v| v == "1") {
        eprintln!("SKIP: {why}");
    } else {
        panic!("{why} (set {ENV_ALLOW_SKIP}=1 to skip instead)");
    }
}

/// `.tools/bin/helm`, installed by `scripts/install-tools.sh` (`make tools`) when missing.
/// When it cannot be installed the test fails with the reason; `None` only with
/// `E2E_ALLOW_SKIP=1`.
pub fn helm() -> Option<PathBuf> {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = HELM.get_or_init(|| {
        let helm = root().join(".tools/bin/helm");
        if !helm.exists() {
            let status = std::process::Command::new(root().join("scripts/install-tools.sh"))
                .status();
            if !helm.exists() {
                return Err(format!(
                    "helm is not installed and scripts/install-tools.sh could not install it ({status:?}); run `make tools`"
                ));
            }
        }
        Ok(helm)
    });
    match found {
        Ok(helm) => Some(helm.clone()),
        Err(why) => {
            missing_prerequisite(why);
            None
        }
    }
}

/// `helm template <release> charts/<chart> --namespace <ns> --set <set>...`.
pub fn helm_template(chart: &str, release: &str, namespace: &str, sets: &[&str]) -> Option<String> {
    let helm = helm()?;
    let mut command = std::process::Command::new(helm);
    command
        .arg("template")
        .arg(release)
        .arg(root().join("charts").join(chart))
        .arg("--namespace")
        .arg(namespace);
    for set in sets {
        command.arg("--set").arg(set);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

/// The hello chart for `release` in `namespace` with the scenarios' fast scaling values
/// (cooldown 2 s, polling 1 s) plus `sets`.
pub fn hello_chart(release: &str, namespace: &str, sets: &[&str]) -> Option<String> {
    let mut all = vec![
        "scaling.cooldownPeriod=2",
        "scaling.pollingInterval=1",
        "app.shutdownDelayMs=300",
    ];
    all.extend_from_slice(sets);
    helm_template("hello", release, namespace, &all)
}

/// Builds the product binaries once per test binary (`cargo build`, debug).
fn build() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet"])
            .args(["-p", "keda-http-interceptor", "-p", "keda-http-scaler"])
            .args(["-p", "keda-http-operator", "-p", "hello"])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cargo build of the product binaries failed"
        );
    });
}

/// The harness with every product binary, fast simulator timings and `tweak` applied; the
/// `e2e-echo` image runs the protocol backend. Runs against the local stand-in, or with
/// `E2E_API=external` against the API server `KUBECONFIG` names (see `e2e/README.md`).
/// Always `Some`; the `Option` lets scenarios share one shape with [`helm`].
pub async fn start(tweak: impl FnOnce(&mut HarnessConfig)) -> Option<Harness> {
    tokio::task::spawn_blocking(build).await.unwrap();
    let mut config = HarnessConfig::from_env().unwrap();
    config.simulator = SimulatorConfig {
        start_delay: Duration::from_millis(100),
        probe_period: Duration::from_millis(50),
        grace_period: Some(Duration::from_secs(10)),
        restart_delay: Duration::from_millis(200),
        inherit_output: std::env::var_os("E2E_VERBOSE").is_some(),
        ..SimulatorConfig::default()
    };
    config.inherit_output = std::env::var_os("E2E_VERBOSE").is_some();
    tweak(&mut config);
    let h = Harness::start(config).await.unwrap();
    h.commands().for_image("e2e-echo", CommandSpec::new(ECHO));
    Some(h)
}

/// Creates namespace `name`.
pub async fn namespace(h: &Harness, name: &str) {
    let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
    h.apply_yaml(&yaml, name).await.unwrap();
}

/// A response, read to the end.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` with `Host: host`.
pub fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(http::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends `req` on a fresh HTTP/1.1 connection to `addr` and reads the whole response;
/// `Err` on a transport error or after 60 s.
pub async fn try_send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Reply, String> {
    let call = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let driver = tokio::spawn(conn);
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        driver.abort();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .unwrap_or_else(|_| Err("no response within 60 s".to_owned()))
}

/// [`try_send`], failing the test on a transport error.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    try_send(addr, req).await.unwrap()
}

/// `GET http://host/path` through the interceptor proxy.
pub async fn get_via(h: &Harness, host: &str, path: &str) -> Reply {
    send(h.proxy_addr(), get(host, path)).await
}

/// Awaits `f` within [`BOUND`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(BOUND, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// `(spec.replicas, readyReplicas, ready endpoints of the Service named like it)`.
pub async fn replicas(h: &Harness, namespace: &str, name: &str) -> (i32, i32, usize) {
    let deployments: Api<Deployment> = Api::namespaced(h.client(), namespace);
    let d = deployments.get(name).await.unwrap();
    let spec = d.spec.replicas.unwrap_or(1);
    let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    (spec, ready, ready_endpoints(h, namespace, name).await)
}

/// Ready endpoints of Service `service`.
pub async fn ready_endpoints(h: &Harness, namespace: &str, service: &str) -> usize {
    let slices: Api<EndpointSlice> = Api::namespaced(h.client(), namespace);
    slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .unwrap()
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count()
}

/// Waits until Deployment `name` wants `n` replicas and has `n` ready endpoints.
pub async fn wait_replicas(h: &Harness, namespace: &str, name: &str, n: i32) {
    within(&format!("{namespace}/{name} at {n} replicas"), async {
        loop {
            let (spec, ready, endpoints) = replicas(h, namespace, name).await;
            if spec == n && ready == n && endpoints == n as usize {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Waits until `spec.replicas` of `name` satisfies `pred`; returns it.
pub async fn wait_spec(
    h: &Harness,
    namespace: &str,
    name: &str,
    pred: impl Fn(i32) -> bool,
) -> i32 {
    within(&format!("{namespace}/{name} replicas"), async {
        loop {
            let (spec, _, _) = replicas(h, namespace, name).await;
            if pred(spec) {
                return spec;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Samples `spec.replicas` of `name` every 100 ms for `period`; returns every value seen.
pub async fn observe_spec(h: &Harness, namespace: &str, name: &str, period: Duration) -> Vec<i32> {
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + period;
    while tokio::time::Instant::now() < end {
        seen.push(replicas(h, namespace, name).await.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// The routing table of interceptor `index` (its admin `/routes`).
pub async fn routes(h: &Harness, index: usize) -> Vec<Value> {
    let admin = h.interceptor_ports()[index].admin;
    let addr = SocketAddr::from(([127, 0, 0, 1], admin));
    match try_send(addr, get("127.0.0.1", "/routes")).await {
        Ok(reply) if reply.status == StatusCode::OK => {
            serde_json::from_slice::<Vec<Value>>(&reply.body).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Waits until every interceptor's route `key` (`namespace/name`) satisfies `pred` (`None`:
/// the route is absent).
pub async fn wait_route(h: &Harness, key: &str, pred: impl Fn(Option<&Value>) -> bool) {
    within(&format!("interceptor route {key}"), async {
        loop {
            let mut all = true;
            for i in 0..h.interceptor_ports().len() {
                let table = routes(h, i).await;
                let route = table.iter().find(|r| r["key"] == key);
                all &= pred(route);
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Waits until every interceptor knows route `key`.
pub async fn wait_route_known(h: &Harness, key: &str) {
    wait_route(h, key, |r| r.is_some()).await;
}

/// Outcome counts of a load run.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    pub fn record(&self, outcome: &Result<Reply, String>) {
        match outcome {
            Ok(r) if r.status.is_success() => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                *self
                    .failed
                    .lock()
                    .unwrap()
                    .entry(r.status.to_string())
                    .or_default() += 1
            }
            Err(e) => *self.failed.lock().unwrap().entry(e.clone()).or_default() += 1,
        }
    }

    pub fn failures(&self) -> u64 {
        self.failed.lock().unwrap().values().sum()
    }

    pub fn summary(&self) -> String {
        format!(
            "sent {}, 2xx {}, failed {} {:?}",
            self.sent.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.failures(),
            self.failed.lock().unwrap()
        )
    }
}

/// Open-loop load: one request every `1/rate` s (each on its own connection, whether or not
/// earlier ones answered) until `stop` resolves; waits for every request, returns the tally.
pub async fn open_loop<F>(
    addr: SocketAddr,
    rate: f64,
    make: impl Fn(u64) -> Request<Full<Bytes>> + Send + 'static,
    stop: F,
) -> Arc<Tally>
where
    F: Future<Output = ()>,
{
    let tally = Arc::new(Tally::default());
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    tokio::pin!(stop);
    let mut n = 0;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {
                let req = make(n);
                n += 1;
                let tally = tally.clone();
                tally.sent.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(async move {
                    let outcome = try_send(addr, req).await;
                    tally.record(&outcome);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
    tally
}

/// A request body from a JSON value.
pub fn json_post(host: &str, path: &str, value: &Value) -> Request<Full<Bytes>> {
    Request::post(path)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).unwrap())))
        .unwrap()
}

/// `Infallible` body error type for streaming request bodies.
pub type Never = Infallible;

/// The documents of a rendered chart.
pub fn docs(yaml: &str) -> Vec<Value> {
    keda_http_e2e::harness::manifests::parse_documents(yaml).unwrap()
}

/// The first document of `kind`.
pub fn doc_mut<'a>(docs: &'a mut [Value], kind: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the rendered chart"))
}

/// Drops every document of `kind`.
pub fn drop_kind(docs: &mut Vec<Value>, kind: &str) {
    docs.retain(|d| d["kind"] != kind);
}

/// Adds `name=value` to the env of the first container of the (first) Deployment.
pub fn add_env(docs: &mut [Value], name: &str, value: &str) {
    let deployment = doc_mut(docs, "Deployment");
    let env = &mut deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    if !env.is_array() {
        *env = Value::Array(Vec::new());
    }
    env.as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "name": name, "value": value }));
}

/// Applies `docs` in order (server-side apply), namespaced ones into `namespace`.
pub async fn apply_docs(h: &Harness, docs: Vec<Value>, namespace: &str) {
    for doc in docs {
        keda_http_e2e::harness::manifests::apply_value(&h.client(), doc, namespace)
            .await
            .unwrap();
    }
}

/// Applies one YAML document built in a test.
pub async fn apply(h: &Harness, yaml: &str, namespace: &str) {
    h.apply_yaml(yaml, namespace).await.unwrap();
}
