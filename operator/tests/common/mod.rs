//! Helpers for the operator's integration tests: the local API server, an in-process operator
//! that can be stopped or killed, watch-based waits bounded by a timeout, fixtures.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use keda_http_api::http_scaled_object::{
    HttpConcurrencyMetric, HttpScalingMetric, ReplicaBounds, ScaleTargetRef,
};
use keda_http_api::interceptor_route::{
    ConcurrencyMetric, PathMatch, RoutingRule, ScalingMetric, TargetRef,
};
use keda_http_api::{
    HTTPScaledObject, HTTPScaledObjectSpec, InterceptorRoute, InterceptorRouteSpec, ScaledObject,
};
use keda_http_operator::{Config, Metrics, Operator};
use kube::api::PostParams;
use kube::runtime::wait::{Condition as WaitCondition, await_condition};
use kube::{Api, Client, Resource};
use kube_standin::LocalApiServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound for any single wait.
pub const WAIT: Duration = Duration::from_secs(30);
/// The namespace the tests work in.
pub const NS: &str = "apps";

/// Awaits `f`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Waits (through a watch, no polling) until `cond` holds for `name`, returning the object.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    cond: impl WaitCondition<K>,
) -> Option<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    within(what, await_condition(api.clone(), name, cond))
        .await
        .unwrap_or_else(|e| panic!("watch failed while waiting for {what}: {e}"))
}

/// The API server plus a client for it.
pub struct Cluster {
    pub server: LocalApiServer,
    pub client: Client,
}

impl Cluster {
    pub async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .try_init();
        let server = LocalApiServer::start().await.expect("api server starts");
        let client = server.client().await.expect("client");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for ns in [NS, "keda"] {
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.to_owned()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            create(&namespaces, &namespace).await;
        }
        Self { server, client }
    }

    pub fn httpsos(&self) -> Api<HTTPScaledObject> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn scaled_objects(&self) -> Api<ScaledObject> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn routes(&self) -> Api<InterceptorRoute> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), NS)
    }
}

/// The configuration the tests run with: the chart's scaler Service and port.
pub fn config() -> Config {
    let mut c = Config::new("keda-add-ons-http-external-scaler", "keda");
    c.external_scaler_port = 9090;
    c
}

/// An operator running on its own task.
pub struct Running {
    pub metrics: Metrics,
    pub metrics_addr: Option<SocketAddr>,
    pub probe_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), keda_http_operator::Error>>,
}

impl Running {
    pub async fn start(client: Client, config: Config) -> Self {
        let operator = Operator::bind(config, client)
            .await
            .expect("operator binds");
        let (stop, stopped) = oneshot::channel::<()>();
        let metrics = operator.metrics();
        let metrics_addr = operator.metrics_addr();
        let probe_addr = operator.probe_addr();
        let task = tokio::spawn(operator.run(async move {
            let _ = stopped.await;
        }));
        Self {
            metrics,
            metrics_addr,
            probe_addr,
            stop: Some(stop),
            task,
        }
    }

    /// Asks for a clean shutdown and waits for it.
    pub async fn stop(mut self) -> Result<(), keda_http_operator::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within("operator shutdown", &mut self.task)
            .await
            .expect("operator task did not panic")
    }

    /// Waits for it to end on its own (without asking it to stop).
    pub async fn stop_result_when_finished(mut self) -> Result<(), keda_http_operator::Error> {
        within("operator to end by itself", &mut self.task)
            .await
            .expect("operator task did not panic")
    }

    /// Stops it abruptly, as a killed process: nothing is released.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// A plain HTTP/1.0 GET on loopback; returns status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut raw = String::new();
    within("response", stream.read_to_string(&mut raw))
        .await
        .expect("read");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// An HTTPScaledObject with labels, annotations, replicas and cooldowns set.
pub fn httpso(name: &str, host: &str) -> HTTPScaledObject {
    let mut h = HTTPScaledObject::new(
        name,
        HTTPScaledObjectSpec {
            hosts: vec![host.to_owned()],
            path_prefixes: Vec::new(),
            headers: Vec::new(),
            scale_target_ref: ScaleTargetRef {
                name: Some(name.to_owned()),
                api_version: Some("apps/v1".to_owned()),
                kind: Some("Deployment".to_owned()),
                service: format!("{name}-svc"),
                port: Some(8080),
                port_name: None,
            },
            cold_start_timeout_failover_ref: None,
            replicas: Some(ReplicaBounds {
                min: Some(0),
                max: Some(10),
            }),
            target_pending_requests: None,
            scaledown_period: Some(120),
            initial_cooldown_period: Some(30),
            scaling_metric: Some(HttpScalingMetric {
                concurrency: Some(HttpConcurrencyMetric { target_value: 50 }),
                request_rate: None,
            }),
            timeouts: None,
        },
    );
    h.metadata.namespace = Some(NS.to_owned());
    h.metadata.labels = Some(BTreeMap::from([("app".to_owned(), name.to_owned())]));
    h.metadata.annotations = Some(BTreeMap::from([("team".to_owned(), "web".to_owned())]));
    h
}

/// An InterceptorRoute for `service` on `host` and `path`.
pub fn route(name: &str, service: &str, host: &str, path: &str) -> InterceptorRoute {
    let mut r = InterceptorRoute::new(
        name,
        InterceptorRouteSpec {
            target: TargetRef {
                service: service.to_owned(),
                port: Some(8080),
                port_name: None,
            },
            rules: vec![RoutingRule {
                hosts: vec![host.to_owned()],
                paths: vec![PathMatch {
                    value: path.to_owned(),
                }],
                headers: Vec::new(),
            }],
            scaling_metric: ScalingMetric {
                concurrency: Some(ConcurrencyMetric { target_value: 10 }),
                request_rate: None,
            },
            cold_start: None,
            timeouts: None,
            static_routes: Vec::new(),
        },
    );
    r.metadata.namespace = Some(NS.to_owned());
    r
}

/// A ClusterIP Service with one port.
pub fn service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NS.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: 8080,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub async fn create<K>(api: &Api<K>, obj: &K) -> K
where
    K: Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    within("create", api.create(&PostParams::default(), obj))
        .await
        .expect("create succeeds")
}

/// The Ready condition of a condition list.
pub fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// Condition: the HTTPScaledObject's Ready has `status` and `reason` for `generation`.
pub fn httpso_ready(
    status: &'static str,
    reason: &'static str,
    generation: i64,
) -> impl WaitCondition<HTTPScaledObject> {
    move |h: Option<&HTTPScaledObject>| {
        h.and_then(|h| h.status.as_ref())
            .and_then(|s| ready(&s.conditions))
            .is_some_and(|c| {
                c.status == status
                    && c.reason == reason
                    && c.observed_generation == Some(generation)
            })
    }
}

/// Condition: the InterceptorRoute's Ready has `status` and `reason` for `generation`.
pub fn route_ready(
    status: &'static str,
    reason: &'static str,
    generation: i64,
) -> impl WaitCondition<InterceptorRoute> {
    move |r: Option<&InterceptorRoute>| {
        r.and_then(|r| r.status.as_ref())
            .and_then(|s| ready(&s.conditions))
            .is_some_and(|c| {
                c.status == status
                    && c.reason == reason
                    && c.observed_generation == Some(generation)
            })
    }
}

/// Condition: the object does not exist.
pub fn absent<K>() -> impl WaitCondition<K> {
    |o: Option<&K>| o.is_none()
}
