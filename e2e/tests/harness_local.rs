//! The harness on the in-memory API server.
//!
//! - Without product binaries: applied YAML becomes running `e2e-backend` pods with ready
//!   EndpointSlices, and the add-on's Services point at loopback ports.
//! - With the real `keda-http-scaler` binary (built in the test with `cargo build`) and a
//!   stub interceptor admin endpoint serving `/queue`: in-flight requests reported by the stub
//!   make the scaler active, the KEDA stand-in scales the app 0 → 1 through gRPC, the
//!   simulator runs it, and with the counts back at zero it returns to 0 after its cooldown.
//! - The same with the real `keda-http-operator` turning an HTTPScaledObject into the
//!   ScaledObject (HTTPScaledObject mode of the scaler).
//! - `E2E_API=external`'s path: CRDs and the add-on's Services installed through a kubeconfig.
// Helpers outside `#[test]` fns unwrap too: any failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use keda_http_api::queue::{QueueCount, QueueCounts};
use keda_http_e2e::harness::{self, Components, Harness, HarnessConfig};
use keda_http_e2e::simulator::{CommandSpec, SimulatorConfig};
use kube::Api;
use kube::api::ListParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOUND: Duration = Duration::from_secs(120);
const BACKEND: &str = env!("CARGO_BIN_EXE_e2e-backend");

const APP: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: app
spec:
  selector:
    app: app
  ports:
    - name: http
      port: 8080
      targetPort: http
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: REPLICAS
  selector:
    matchLabels:
      app: app
  template:
    metadata:
      labels:
        app: app
    spec:
      containers:
        - name: app
          image: e2e-backend:dev
          ports:
            - name: http
              containerPort: 8080
          readinessProbe:
            httpGet:
              path: /healthz
              port: http
"#;

const SCALING: &str = r#"
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: app
spec:
  target:
    service: app
    port: 8080
  rules:
    - hosts: ["app.test"]
  scalingMetric:
    concurrency:
      targetValue: 2
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: app
spec:
  scaleTargetRef:
    name: app
  pollingInterval: 1
  cooldownPeriod: 2
  minReplicaCount: 0
  maxReplicaCount: 3
  triggers:
    - type: external-push
      metadata:
        scalerAddress: keda-add-ons-http-external-scaler.keda:9090
        interceptorRoute: app
"#;

fn config(components: Components) -> HarnessConfig {
    let mut config = HarnessConfig::from_env().unwrap();
    config.components = components;
    config.simulator = SimulatorConfig {
        start_delay: Duration::from_millis(50),
        probe_period: Duration::from_millis(50),
        grace_period: Some(Duration::from_secs(5)),
        restart_delay: Duration::from_millis(100),
        inherit_output: false,
        ..SimulatorConfig::default()
    };
    config.keda.hpa.scale_down_stabilization = Duration::ZERO;
    config
}

async fn ready_slices(h: &Harness, service: &str, namespace: &str) -> usize {
    let api: Api<EndpointSlice> = Api::namespaced(h.client(), namespace);
    let list = api
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .unwrap();
    list.items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count()
}

async fn wait_ready_replicas(h: &Harness, n: i32) {
    let api: Api<Deployment> = Api::namespaced(h.client(), "default");
    let poll = async {
        loop {
            let d = api.get("app").await.unwrap();
            let spec = d.spec.replicas.unwrap_or(1);
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            if spec == n && ready == n && ready_slices(h, "app", "default").await == n as usize {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(BOUND, poll)
        .await
        .unwrap_or_else(|_| panic!("app never had {n} ready replicas"));
}

#[tokio::test]
async fn applied_manifests_run_as_processes() {
    let h = Harness::start(config(Components::none())).await.unwrap();
    h.commands()
        .for_image("e2e-backend", CommandSpec::new(BACKEND));
    let applied = h
        .apply_yaml(&APP.replace("REPLICAS", "2"), "default")
        .await
        .unwrap();
    assert_eq!(applied, ["Service/default/app", "Deployment/default/app"]);
    wait_ready_replicas(&h, 2).await;
    // The add-on's Services exist in `keda` with slices for the processes.
    assert_eq!(
        ready_slices(&h, harness::INTERCEPTOR_ADMIN_SERVICE, harness::NAMESPACE).await,
        1
    );
    // Applying again is idempotent (server-side apply).
    h.apply_yaml(&APP.replace("REPLICAS", "2"), "default")
        .await
        .unwrap();
    h.stop().await;
}

/// A stand-in for the interceptor's admin port, on the address its EndpointSlice names:
/// `/queue` answers the shared counts; other
/// paths (the `/queue/watch` push stream) are 404, so the scaler polls.
async fn stub_admin(
    address: std::net::IpAddr,
    port: u16,
    counts: Arc<Mutex<QueueCounts>>,
) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind((address, port))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let Ok(n) = stream.read(&mut buf).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, body) = if path == "/queue" {
                    ("200 OK", counts.lock().unwrap().to_body())
                } else {
                    ("404 Not Found", Vec::new())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    })
}

fn set_concurrency(counts: &Mutex<QueueCounts>, concurrency: i64) {
    let mut map = BTreeMap::new();
    map.insert(
        "default/app".to_owned(),
        QueueCount {
            concurrency,
            request_count: 0,
        },
    );
    *counts.lock().unwrap() = QueueCounts(map);
}

#[tokio::test]
async fn real_scaler_drives_keda_stand_in_and_simulator() {
    tokio::time::timeout(BOUND * 5, harness::build_binaries(&["keda-http-scaler"]))
        .await
        .unwrap()
        .unwrap();
    let components = Components {
        interceptor: false,
        scaler: true,
        operator: false,
    };
    let config = config(components);
    // The stub must listen before the scaler starts polling; ports are chosen by the harness,
    // so start it right after, on the admin port (the scaler retries its polls).
    let h = Harness::start(config).await.unwrap();
    let counts = Arc::new(Mutex::new(QueueCounts::default()));
    set_concurrency(&counts, 0);
    let stub = stub_admin(h.process_address(), h.ports().admin, counts.clone()).await;
    h.commands()
        .for_image("e2e-backend", CommandSpec::new(BACKEND));
    h.apply_yaml(&APP.replace("REPLICAS", "0"), "default")
        .await
        .unwrap();
    h.apply_yaml(SCALING, "default").await.unwrap();

    // Three requests in flight against a target of 2 per replica: active, 0 → 1, then the HPA
    // asks for ceil(3 / 2) = 2.
    set_concurrency(&counts, 3);
    wait_ready_replicas(&h, 2).await;

    // Idle: back to zero after the 2 s cooldown.
    set_concurrency(&counts, 0);
    wait_ready_replicas(&h, 0).await;

    h.stop().await;
    stub.abort();
}

#[tokio::test]
async fn external_api_gets_the_crds_installed() {
    // Any API server reachable through a kubeconfig: here a separate in-memory one.
    let external = kube_standin::LocalApiServer::start().await.unwrap();
    let mut config = config(Components::none());
    config.api = harness::ApiChoice::External(external.kubeconfig_path().to_path_buf());
    let h = Harness::start(config).await.unwrap();
    assert!(h.local_api().is_none());
    assert_eq!(h.kubeconfig(), external.kubeconfig_path());
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(h.client());
    for name in [
        "interceptorroutes.http.keda.sh",
        "httpscaledobjects.http.keda.sh",
        "scaledobjects.keda.sh",
    ] {
        crds.get(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The add-on's Services went to the external server too.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(external.client().await.unwrap(), harness::NAMESPACE);
    services.get(harness::SCALER_SERVICE).await.unwrap();
    h.stop().await;
}

const HTTPSO: &str = r#"
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: app
spec:
  hosts: ["app.test"]
  scaleTargetRef:
    name: app
    service: app
    port: 8080
  replicas:
    min: 0
    max: 3
  scaledownPeriod: 2
  scalingMetric:
    concurrency:
      targetValue: 2
"#;

#[tokio::test]
async fn operator_generated_scaled_object_is_driven_by_the_real_scaler() {
    tokio::time::timeout(
        BOUND * 5,
        harness::build_binaries(&["keda-http-scaler", "keda-http-operator"]),
    )
    .await
    .unwrap()
    .unwrap();
    let components = Components {
        interceptor: false,
        scaler: true,
        operator: true,
    };
    let h = Harness::start(config(components)).await.unwrap();
    let counts = Arc::new(Mutex::new(QueueCounts::default()));
    set_concurrency(&counts, 0);
    let stub = stub_admin(h.process_address(), h.ports().admin, counts.clone()).await;
    h.commands()
        .for_image("e2e-backend", CommandSpec::new(BACKEND));
    h.apply_yaml(&APP.replace("REPLICAS", "0"), "default")
        .await
        .unwrap();
    h.apply_yaml(HTTPSO, "default").await.unwrap();

    // The operator writes the ScaledObject KEDA acts on, with the scaler's in-cluster address.
    let scaled_objects: Api<keda_http_api::scaled_object::ScaledObject> =
        Api::namespaced(h.client(), "default");
    let generated = async {
        loop {
            if let Ok(so) = scaled_objects.get("app").await {
                return so;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let so = tokio::time::timeout(BOUND, generated).await.unwrap();
    assert_eq!(
        so.spec.triggers[0]
            .metadata
            .get("scalerAddress")
            .map(String::as_str),
        Some("keda-add-ons-http-external-scaler.keda:9090")
    );

    set_concurrency(&counts, 3);
    wait_ready_replicas(&h, 2).await;
    set_concurrency(&counts, 0);
    wait_ready_replicas(&h, 0).await;
    h.stop().await;
    stub.abort();
}
