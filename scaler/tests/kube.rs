//! The Kubernetes adapters against the local API server from `keda-http-e2e`: interceptor
//! discovery from EndpointSlices, InterceptorRoute/HTTPScaledObject lookups, and the binary
//! itself configured by kubeconfig, as in a cluster.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::{FakeInterceptor, bounded, by_name, metrics_req, so_ref};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use keda_http_api::{HTTPScaledObject, InterceptorRoute};
use keda_http_scaler::discovery::{self, AdminService};
use keda_http_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_http_scaler::targets::{KubeTargets, ScaledTargets as _};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use kube_standin::LocalApiServer;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const NS: &str = "keda";
const ADMIN: &str = "keda-add-ons-http-interceptor-admin";

fn slice(
    name: &str,
    service: &str,
    endpoints: serde_json::Value,
    port: Option<u16>,
) -> EndpointSlice {
    let ports = match port {
        Some(p) => serde_json::json!([{"name": "admin", "port": p, "protocol": "TCP"}]),
        None => serde_json::json!([]),
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": service}
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports
    }))
    .expect("EndpointSlice")
}

async fn namespaces(client: &Client, names: &[&str]) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for name in names {
        let ns = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))
        .expect("namespace");
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn discovery_follows_the_admin_endpoint_slices() {
    bounded(async {
        let server = LocalApiServer::start_with(loopback_backends())
            .await
            .expect("api server");
        let client = server.client().await.expect("client");
        namespaces(&client, &[NS, "apps"]).await;
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
        let admin = AdminService {
            namespace: NS.to_owned(),
            service: ADMIN.to_owned(),
            port_name: "admin".to_owned(),
            port: 9090,
        };
        let (mut rx, drive) = discovery::watch_endpoint_slices(client, admin);
        let task = tokio::spawn(drive);
        let pp = PostParams::default();
        slices
            .create(
                &pp,
                &slice(
                    "admin-a",
                    ADMIN,
                    serde_json::json!([
                        {"addresses": ["127.0.0.1"], "conditions": {"ready": true}},
                        {"addresses": ["127.0.0.2"], "conditions": {"ready": false}}
                    ]),
                    Some(41001),
                ),
            )
            .await
            .expect("create a");
        slices
            .create(
                &pp,
                &slice(
                    "admin-b",
                    ADMIN,
                    serde_json::json!([{"addresses": ["127.0.0.1"]}]),
                    Some(41002),
                ),
            )
            .await
            .expect("create b");
        // No named port: the configured admin port. Another Service: ignored.
        slices
            .create(
                &pp,
                &slice(
                    "admin-c",
                    ADMIN,
                    serde_json::json!([{"addresses": ["10.1.2.3"]}]),
                    None,
                ),
            )
            .await
            .expect("create c");
        slices
            .create(
                &pp,
                &slice(
                    "proxy",
                    "keda-add-ons-http-interceptor-proxy",
                    serde_json::json!([{"addresses": ["10.9.9.9"]}]),
                    Some(8080),
                ),
            )
            .await
            .expect("create proxy");
        let want: BTreeSet<SocketAddr> = [
            loopback(41001),
            loopback(41002),
            SocketAddr::from(([10, 1, 2, 3], 9090)),
        ]
        .into_iter()
        .collect();
        rx.wait_for(|set| **set == want)
            .await
            .expect("discovery alive");

        slices
            .delete("admin-a", &DeleteParams::default())
            .await
            .expect("delete a");
        rx.wait_for(|set| !set.contains(&loopback(41001)) && set.len() == 2)
            .await
            .expect("discovery alive");
        task.abort();
    })
    .await;
}

async fn create_objects(client: &Client) {
    let routes: Api<InterceptorRoute> = Api::namespaced(client.clone(), "apps");
    let route: InterceptorRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "InterceptorRoute",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {
            "target": {"service": "web", "port": 8080},
            "rules": [{"hosts": ["web.example"]}],
            "scalingMetric": {"concurrency": {"targetValue": 10}}
        }
    }))
    .expect("route");
    routes
        .create(&PostParams::default(), &route)
        .await
        .expect("create route");
    let sos: Api<HTTPScaledObject> = Api::namespaced(client.clone(), "apps");
    let so: HTTPScaledObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": "legacy", "namespace": "apps"},
        "spec": {
            "hosts": ["legacy.example"],
            "scaleTargetRef": {"name": "legacy", "service": "legacy", "port": 8080},
            "targetPendingRequests": 25
        }
    }))
    .expect("httpso");
    sos.create(&PostParams::default(), &so)
        .await
        .expect("create httpso");
}

#[tokio::test]
async fn targets_are_read_from_the_cluster() {
    bounded(async {
        let server = LocalApiServer::start_with(loopback_backends())
            .await
            .expect("api server");
        let client = server.client().await.expect("client");
        namespaces(&client, &[NS, "apps"]).await;
        create_objects(&client).await;
        let (targets, drive) = KubeTargets::watch(client);
        let task = tokio::spawn(drive);
        targets.wait_until_ready().await;
        let route = targets
            .interceptor_route("apps", "web")
            .expect("route listed");
        assert_eq!(route.concurrency, Some(10.0));
        assert_eq!(route.rate, None);
        let so = targets
            .http_scaled_object("apps", "legacy")
            .expect("httpso listed");
        assert_eq!(so.target(), 25);
        assert!(targets.interceptor_route("other", "web").is_none());
        task.abort();
    })
    .await;
}

/// Stores `body` as a server keeps an object written under an older, looser CRD (validation
/// only runs on writes): our decoder or validation refuses it, the server serves it.
fn store_poison(server: &LocalApiServer, version: &str, kind: &str, body: serde_json::Value) {
    let kind = server
        .store()
        .find_kind("http.keda.sh", version, kind)
        .expect("kind registered");
    server
        .store()
        .create(
            &kind,
            Some("apps"),
            body,
            &kube_standin::write::WriteOptions::default(),
        )
        .expect("stored");
}

#[tokio::test]
async fn a_poison_object_does_not_hide_the_good_ones() {
    bounded(async {
        let server = LocalApiServer::start().await.expect("api server");
        let client = server.client().await.expect("client");
        namespaces(&client, &[NS, "apps"]).await;
        create_objects(&client).await;
        store_poison(
            &server,
            "v1beta1",
            "InterceptorRoute",
            serde_json::json!({
                "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
                "metadata": {"name": "poison", "namespace": "apps"},
                "spec": {"target": {"service": "web", "port": 8080},
                         "rules": [{"hosts": ["poison.example"]}],
                         "scalingMetric": {"concurrency": {"targetValue": 10}},
                         "timeouts": {"request": "99999999999999999999h"}}
            }),
        );
        store_poison(
            &server,
            "v1alpha1",
            "HTTPScaledObject",
            serde_json::json!({
                "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
                "metadata": {"name": "poison-legacy", "namespace": "apps"},
                "spec": {"hosts": ["poison-legacy.example"],
                         "scaleTargetRef": {"name": "x", "service": "x", "port": 8080},
                         "targetPendingRequests": "many"}
            }),
        );
        let invalid = keda_http_runtime::watch::InvalidObjects::default();
        let (targets, drive) = KubeTargets::watch_counted(client, invalid.clone());
        let task = tokio::spawn(drive);
        targets.wait_until_ready().await;
        let route = targets
            .interceptor_route("apps", "web")
            .expect("the good route is listed next to the poison one");
        assert_eq!(route.concurrency, Some(10.0));
        assert_eq!(
            targets
                .http_scaled_object("apps", "legacy")
                .expect("the good httpso is listed")
                .target(),
            25
        );
        assert!(targets.interceptor_route("apps", "poison").is_none());
        assert!(
            targets
                .http_scaled_object("apps", "poison-legacy")
                .is_none()
        );
        assert_eq!(invalid.get("InterceptorRoute"), 1);
        assert_eq!(invalid.get("HTTPScaledObject"), 1);
        task.abort();
    })
    .await;
}

/// A free loopback port (bound and released; the binary binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A plain HTTP/1.0 GET on loopback; the whole response as text.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).await.expect("read");
    out
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_keda_from_a_kubeconfig_and_exits_cleanly_on_sigterm() {
    bounded(async {
        let server = LocalApiServer::start_with(loopback_backends())
            .await
            .expect("api server");
        let client = server.client().await.expect("client");
        namespaces(&client, &[NS, "apps"]).await;
        create_objects(&client).await;
        let interceptor = FakeInterceptor::start().await;
        interceptor.set("apps/web", 3, 0);
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
        slices
            .create(
                &PostParams::default(),
                &slice(
                    "admin-a",
                    ADMIN,
                    serde_json::json!([{"addresses": ["127.0.0.1"]}]),
                    Some(interceptor.addr.port()),
                ),
            )
            .await
            .expect("create slice");

        let grpc_port = free_port();
        let metrics_port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_keda-http-scaler"))
            .env("KUBECONFIG", server.kubeconfig_path())
            .env("KEDA_HTTP_SCALER_PORT", grpc_port.to_string())
            .env("KEDA_HTTP_BIND_ADDRESS", "127.0.0.1")
            .env("KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE", NS)
            .env("KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE", ADMIN)
            .env("KEDA_HTTP_SCALER_TARGET_ADMIN_PORT", "1")
            .env("KEDA_HTTP_QUEUE_TICK_DURATION", "100ms")
            .env("OTEL_PROM_EXPORTER_PORT", metrics_port.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the scaler");
        let stdout = child.stdout.take().expect("stdout");
        let mut child = KillOnDrop(child);
        // Wait for the "serving" log line (the listener is bound before it is written).
        let (serving_tx, serving_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut serving_tx = Some(serving_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("keda-http-scaler serving")
                    && let Some(tx) = serving_tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        serving_rx.await.expect("the scaler started serving");

        let channel =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                .expect("uri")
                .connect()
                .await
                .expect("connect");
        let mut health = HealthClient::new(channel.clone());
        let mut watch = health
            .watch(HealthCheckRequest {
                service: "readiness".to_owned(),
            })
            .await
            .expect("watch")
            .into_inner();
        while watch.message().await.expect("ok").expect("open").status
            != ServingStatus::Serving as i32
        {}
        drop(watch);

        let mut keda = ExternalScalerClient::new(channel);
        let sor = so_ref("apps", "web", &[("interceptorRoute", "web")]);
        let values = keda
            .get_metrics(metrics_req(&sor, ""))
            .await
            .expect("GetMetrics")
            .into_inner()
            .metric_values;
        assert_eq!(by_name(&values)["http_web_concurrency"], (0, 3.0));
        let sor = so_ref("apps", "legacy", &[("httpScaledObject", "legacy")]);
        let specs = keda
            .get_metric_spec(sor)
            .await
            .expect("GetMetricSpec")
            .into_inner()
            .metric_specs;
        assert_eq!(specs[0].metric_name, "http-apps_002Flegacy");
        assert_eq!(specs[0].target_size, 25);

        // Prometheus text with the upstream names on the metrics port.
        let metrics = http_get(metrics_port, "/metrics").await;
        assert!(
            metrics.starts_with("HTTP/1.0 200") || metrics.starts_with("HTTP/1.1 200"),
            "{metrics}"
        );
        assert!(metrics.contains("scaler_pinger_endpoints 1"), "{metrics}");
        assert!(
            metrics.contains("scaler_pinger_fetch_duration_seconds_bucket"),
            "{metrics}"
        );
        for series in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_max_fds",
        ] {
            assert!(
                metrics.contains(&format!("\n{series} ")),
                "{series}: {metrics}"
            );
        }

        let pid = child.0.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = tokio::task::spawn_blocking(move || child.0.wait())
            .await
            .expect("join")
            .expect("wait");
        assert!(exit.success(), "exit status {exit:?}");
    })
    .await;
}

/// The stand-in as strict as a real API server, except that the test backends' EndpointSlices
/// may name 127.0.0.1 (a real server refuses loopback addresses).
fn loopback_backends() -> kube_standin::ServerConfig {
    kube_standin::ServerConfig {
        allow_loopback_endpoints: true,
        ..kube_standin::ServerConfig::default()
    }
}
