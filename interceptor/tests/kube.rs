//! The interceptor against the local Kubernetes API stand-in (`keda-http-e2e`): routes,
//! endpoints and bodies come from kube-rs watches; cold starts are released by EndpointSlice
//! events; watch outages are survived.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{backend, bounded, full, get};
use http::{Response, StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use keda_http_api::{HTTPScaledObject, InterceptorRoute};
use keda_http_interceptor::queue::Queue;
use keda_http_interceptor::watches::{KubeWatches, RoutingRefresh};
use keda_http_interceptor::{BoundAddrs, Config, Interceptor, RouteTableHandle};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_standin::LocalApiServer;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

struct Cluster {
    api: LocalApiServer,
    client: kube::Client,
    addrs: BoundAddrs,
    routes: RouteTableHandle,
    queue: Arc<Queue>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), keda_http_interceptor::Error>>>,
    watches: CancellationToken,
    invalid: keda_http_runtime::watch::InvalidObjects,
}

impl Cluster {
    async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let api = LocalApiServer::start_with(loopback_backends())
            .await
            .expect("API server");
        let cluster = Self::launch(api, configure).await;
        // Ready only after the first full sync of every watch.
        cluster.wait_table(|_| true).await;
        let (status, _, _) = get(&format!("http://{}/readyz", cluster.addrs.admin), "a").await;
        assert_eq!(status, StatusCode::OK);
        cluster
    }

    /// Starts the interceptor on `api` without waiting for it to be ready.
    async fn launch(api: LocalApiServer, configure: impl FnOnce(&mut Config)) -> Self {
        let client = api.client().await.expect("client");
        let mut config = Config::for_tests();
        configure(&mut config);
        if !config.watch_namespace.is_empty() {
            let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
            namespaces
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": config.watch_namespace}}))
                        .expect("namespace"),
                )
                .await
                .expect("create the watched namespace");
        }
        let watches = KubeWatches::new(client.clone(), &config.watch_namespace);
        let (interval, max_staleness) = (
            config.routing_table_refresh_interval,
            config.routing_table_max_staleness,
        );
        let interceptor = Interceptor::bind_with(config, watches.endpoints(), watches.bodies())
            .await
            .expect("bind");
        let stop_watches = CancellationToken::new();
        let invalid = interceptor.invalid_objects();
        watches
            .refresh(RoutingRefresh {
                interval,
                max_staleness,
                lifecycle: interceptor.lifecycle(),
            })
            .count_invalid_in(invalid.clone())
            .spawn(interceptor.routes(), stop_watches.clone());
        let addrs = interceptor.addrs();
        let routes = interceptor.routes();
        let queue = interceptor.queue();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(interceptor.run(async move {
            let _ = stopped.await;
        }));
        Self {
            api,
            client,
            addrs,
            routes,
            queue,
            stop: Some(stop),
            task: Some(task),
            watches: stop_watches,
            invalid,
        }
    }

    async fn readyz(&self) -> StatusCode {
        get(&format!("http://{}/readyz", self.addrs.admin), "admin")
            .await
            .0
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("joined").expect("run ok");
        }
        self.watches.cancel();
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addrs.proxy, path)
    }

    /// Waits (on table installs, no polling) until the installed table satisfies `check`.
    async fn wait_table(
        &self,
        check: impl Fn(&keda_http_interceptor::routing::RouteTable) -> bool,
    ) {
        let mut installs = self.routes.installs();
        loop {
            if self.routes.is_installed() && check(&self.routes.load_full()) {
                return;
            }
            installs.changed().await.expect("routes alive");
        }
    }

    /// Waits until route `name` targets `service` with `ready` ready endpoints.
    async fn wait_route(&self, name: &str, service: &str, ready: usize) {
        let key = format!("{NS}/{name}");
        let mut installs = self.routes.installs();
        loop {
            let table = self.routes.load_full();
            if let Some(route) = table.routes().iter().find(|r| *r.key == *key)
                && *route.target.service == *service
            {
                let mut rx = route.pool.ready();
                rx.wait_for(|s| s.ready.len() == ready)
                    .await
                    .expect("pool alive");
                return;
            }
            installs.changed().await.expect("routes alive");
        }
    }

    async fn wait_gone(&self, name: &str) {
        let key = format!("{NS}/{name}");
        self.wait_table(|t| t.routes().iter().all(|r| *r.key != *key))
            .await;
    }

    /// Bounded polling of the counters until `key` has `n` requests in flight.
    async fn wait_in_flight(&self, key: &str, n: i64) {
        while self.queue.snapshot().0.get(key).map(|c| c.concurrency) != Some(n) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn request_count(&self, key: &str) -> i64 {
        self.queue.snapshot().0[key].request_count
    }

    async fn create<K>(&self, value: Value) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), NS);
        let object: K = serde_json::from_value(value).expect("object");
        api.create(&PostParams::default(), &object)
            .await
            .expect("create")
    }

    async fn service(&self, name: &str) {
        self.create::<Service>(json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 8080}], "selector": {"app": name}}
        }))
        .await;
    }

    /// One slice per pod, as the simulator writes them.
    async fn slice(&self, service: &str, pod: &str, addr: SocketAddr, ready: bool) {
        self.create::<EndpointSlice>(slice_json(service, pod, addr, ready))
            .await;
    }

    async fn route(&self, name: &str, host: &str, service: &str, extra: Value) {
        self.create::<InterceptorRoute>(route_json(name, host, service, extra))
            .await;
    }
}

fn slice_json(service: &str, pod: &str, addr: SocketAddr, ready: bool) -> Value {
    json!({
        "metadata": {"name": format!("{service}-{pod}"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [addr.ip().to_string()],
                       "conditions": {"ready": ready, "serving": ready, "terminating": false}}],
        "ports": [{"name": "http", "port": addr.port(), "protocol": "TCP"}]
    })
}

fn route_json(name: &str, host: &str, service: &str, extra: Value) -> Value {
    let mut spec = json!({
        "target": {"service": service, "port": 8080},
        "rules": [{"hosts": [host]}],
        "scalingMetric": {"concurrency": {"targetValue": 10}}
    });
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    json!({
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "InterceptorRoute",
        "metadata": {"name": name},
        "spec": spec
    })
}

/// A backend answering `text`, counting the requests it served.
async fn counting_backend(text: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let addr = backend(move |_req| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Response::new(full(Bytes::from_static(text.as_bytes())))
        }
    })
    .await;
    (addr, hits)
}

fn test_config(c: &mut Config) {
    c.readiness_timeout = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_follows_the_api_without_restart() {
    bounded(async {
        let c = Cluster::start(test_config).await;
        let (a, _) = counting_backend("a").await;
        let (b, _) = counting_backend("b").await;
        c.service("svc-a").await;
        c.service("svc-b").await;
        c.slice("svc-a", "p1", a, true).await;
        c.slice("svc-b", "p1", b, true).await;

        c.route("app", "app.test", "svc-a", json!({})).await;
        c.wait_route("app", "svc-a", 1).await;
        let (status, headers, body) = get(&c.url("/"), "app.test").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"a"[..]));
        assert_eq!(headers["x-keda-http-cold-start"], "false");

        let api: Api<InterceptorRoute> = Api::namespaced(c.client.clone(), NS);
        api.patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"target": {"service": "svc-b", "port": 8080}}})),
        )
        .await
        .expect("patch");
        c.wait_route("app", "svc-b", 1).await;
        let (status, _, body) = get(&c.url("/"), "app.test").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"b"[..]));

        api.delete("app", &DeleteParams::default())
            .await
            .expect("delete");
        c.wait_gone("app").await;
        let (status, _, _) = get(&c.url("/"), "app.test").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // The deprecated HTTPScaledObject routes too (converted as compat §2.3).
        c.create::<HTTPScaledObject>(json!({
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": {"name": "legacy"},
            "spec": {"hosts": ["legacy.test"],
                     "scaleTargetRef": {"name": "legacy", "service": "svc-a", "port": 8080}}
        }))
        .await;
        c.wait_route("legacy", "svc-a", 1).await;
        let (status, _, body) = get(&c.url("/"), "legacy.test").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"a"[..]));
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_request_is_released_by_the_slice_event() {
    bounded(async {
        let c = Cluster::start(test_config).await;
        let (addr, hits) = counting_backend("warm").await;
        c.service("cold").await;
        c.route("cold", "cold.test", "cold", json!({})).await;
        c.wait_route("cold", "cold", 0).await;
        // A slice whose endpoint is not ready yet does not release anything.
        c.slice("cold", "p1", addr, false).await;

        // The scaler's push stream: a line now, and one as soon as the held request counts.
        let req = http::Request::get(format!("http://{}/queue/watch", c.addrs.admin))
            .body(common::empty())
            .expect("request");
        let mut stream = common::client()
            .request(req)
            .await
            .expect("watch")
            .into_body();
        let url = c.url("/");
        let held = tokio::spawn(async move { get(&url, "cold.test").await });
        loop {
            let line = stream
                .frame()
                .await
                .expect("frame")
                .expect("ok")
                .into_data()
                .expect("data");
            let counts = keda_http_api::queue::QueueCounts::from_body(&line).expect("json");
            if counts.0["default/cold"].concurrency == 1 {
                break;
            }
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0);

        let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), NS);
        slices
            .replace(
                "cold-p1",
                &PostParams::default(),
                &serde_json::from_value(slice_json("cold", "p1", addr, true)).expect("slice"),
            )
            .await
            .expect("mark ready");
        let (status, headers, body) = held.await.expect("joined");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"warm"[..]));
        assert_eq!(headers["x-keda-http-cold-start"], "true");

        let (status, headers, _) = get(&c.url("/"), "cold.test").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-keda-http-cold-start"], "false");
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        // The duration metric tells the held request from the warm one.
        let metrics_addr = c.addrs.metrics.expect("metrics port");
        let (_, _, metrics) = get(&format!("http://{metrics_addr}/metrics"), "m").await;
        let metrics = String::from_utf8_lossy(&metrics).into_owned();
        let labels = "code=\"200\",method=\"GET\",route_name=\"cold\",route_namespace=\"default\"";
        for cold in ["true", "false"] {
            assert!(
                metrics.contains(&format!(
                    "interceptor_request_duration_seconds_count{{{labels},cold_start=\"{cold}\"}} 1\n"
                )),
                "{metrics}"
            );
        }
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_timeout_fallback_and_unknown_port() {
    bounded(async {
        let c = Cluster::start(test_config).await;
        let (fb, _) = counting_backend("fallback").await;
        c.service("app").await;
        c.service("fb").await;
        c.slice("fb", "p1", fb, true).await;
        c.route(
            "slow",
            "slow.test",
            "app",
            json!({"timeouts": {"readiness": "50ms"}}),
        )
        .await;
        c.route(
            "withfb",
            "fb.test",
            "app",
            json!({"timeouts": {"readiness": "50ms"},
                   "coldStart": {"fallback": {"service": {"name": "fb", "port": 8080}}}}),
        )
        .await;
        c.route(
            "badport",
            "badport.test",
            "app",
            json!({"target": {"service": "app", "portName": "nope"}}),
        )
        .await;
        c.wait_route("badport", "app", 0).await;
        c.wait_route("withfb", "app", 0).await;
        c.wait_route("slow", "app", 0).await;

        let (status, _, body) = get(&c.url("/"), "slow.test").await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::GATEWAY_TIMEOUT, &b"Gateway Timeout\n"[..])
        );
        assert_eq!(
            c.request_count("default/slow"),
            1,
            "counted: it drove scale-up"
        );

        let (status, headers, body) = get(&c.url("/"), "fb.test").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"fallback"[..]));
        assert!(headers.get("x-keda-http-cold-start").is_none());

        let (status, _, _) = get(&c.url("/"), "badport.test").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_configmap_body_and_overflow() {
    bounded(async {
        let c = Cluster::start(test_config).await;
        c.service("app").await;
        c.create::<ConfigMap>(json!({
            "metadata": {"name": "pages", "labels": {"http.keda.sh/response-body": "true"}},
            "data": {"index.html": "<p>waking</p>"}
        }))
        .await;
        c.route(
            "ph",
            "ph.test",
            "app",
            json!({"coldStart": {"placeholder": {"response": {
                "statusCode": 202, "body": "warming up", "headers": {"x-placeholder": "1"}}}}}),
        )
        .await;
        c.route(
            "phcm",
            "phcm.test",
            "app",
            json!({"coldStart": {"placeholder": {"response": {
                "bodyFromConfigMap": {"name": "pages"}}}}}),
        )
        .await;
        c.route(
            "bounded",
            "bounded.test",
            "app",
            json!({"coldStart": {"maxPendingRequests": 1}}),
        )
        .await;
        c.wait_route("ph", "app", 0).await;
        c.wait_route("phcm", "app", 0).await;
        c.wait_route("bounded", "app", 0).await;

        let (status, headers, body) = get(&c.url("/"), "ph.test").await;
        assert_eq!((status.as_u16(), &body[..]), (202, &b"warming up"[..]));
        assert_eq!(headers["x-placeholder"], "1");
        assert_eq!(c.request_count("default/ph"), 1, "the placeholder counts as demand");

        // The ConfigMap watch may trail the route watch: bounded polling until it is synced.
        loop {
            let (status, headers, body) = get(&c.url("/"), "phcm.test").await;
            if status == StatusCode::SERVICE_UNAVAILABLE && &body[..] == b"<p>waking</p>" {
                assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let url = c.url("/");
        let held = tokio::spawn(async move { get(&url, "bounded.test").await });
        c.wait_in_flight("default/bounded", 1).await;
        let (status, headers, _) = get(&c.url("/"), "bounded.test").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        let metrics_addr = c.addrs.metrics.expect("metrics port");
        let (_, _, metrics) = get(&format!("http://{metrics_addr}/metrics"), "m").await;
        let metrics = String::from_utf8_lossy(&metrics).into_owned();
        assert!(
            metrics.contains("interceptor_cold_start_rejections_total{route_name=\"bounded\",route_namespace=\"default\"} 1"),
            "{metrics}"
        );

        let (addr, _) = counting_backend("up").await;
        c.slice("app", "p1", addr, true).await;
        let (status, _, body) = held.await.expect("joined");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"up"[..]));
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_routes_answer_uncounted() {
    bounded(async {
        let c = Cluster::start(test_config).await;
        let (addr, hits) = counting_backend("app").await;
        c.service("app").await;
        c.route(
            "st",
            "st.test",
            "app",
            json!({"staticRoutes": [
                {"rules": [{"paths": [{"value": "/healthz"}]}], "responseMode": "Always",
                 "response": {"body": "fine"}},
                {"rules": [{"paths": [{"value": "/status"}]}],
                 "response": {"statusCode": 503, "body": "asleep"}}
            ]}),
        )
        .await;
        c.wait_route("st", "app", 0).await;

        let (status, _, body) = get(&c.url("/healthz"), "st.test").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"fine"[..]));
        let (status, _, body) = get(&c.url("/status"), "st.test").await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::SERVICE_UNAVAILABLE, &b"asleep"[..])
        );
        assert_eq!(
            c.request_count("default/st"),
            0,
            "static routes are not counted"
        );

        c.slice("app", "p1", addr, true).await;
        c.wait_route("st", "app", 1).await;
        let (status, _, body) = get(&c.url("/status"), "st.test").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"app"[..]));
        let (_, _, body) = get(&c.url("/healthz"), "st.test").await;
        assert_eq!(&body[..], b"fine");
        assert_eq!(c.request_count("default/st"), 0);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_outages_keep_the_last_state_and_recover() {
    bounded(async {
        let c = Cluster::start(test_config).await;
        let (a, _) = counting_backend("a").await;
        let (b, _) = counting_backend("b").await;
        c.service("app").await;
        c.service("second").await;
        c.slice("app", "p1", a, true).await;
        c.route("app", "app.test", "app", json!({})).await;
        c.wait_route("app", "app", 1).await;

        // Close every watch and make the next requests fail: the proxy keeps serving.
        let faults = c.api.faults();
        faults.fail_next(6);
        faults.close_watches();
        for _ in 0..5 {
            let (status, _, body) = get(&c.url("/"), "app.test").await;
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"a"[..]));
        }
        faults
            .failures()
            .wait_for(|n| *n == 0)
            .await
            .expect("faults alive");
        // Changes made now arrive after the watches resume.
        c.route("second", "second.test", "second", json!({})).await;
        c.slice("second", "p1", b, true).await;
        c.wait_route("second", "second", 1).await;
        let (status, _, body) = get(&c.url("/"), "second.test").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"b"[..]));

        // 410 Gone: history compacted, watches closed; the watchers relist.
        faults.compact_history();
        faults.close_watches();
        let (status, _, _) = get(&c.url("/"), "app.test").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "served from the last state during the relist"
        );
        let routes: Api<InterceptorRoute> = Api::namespaced(c.client.clone(), NS);
        routes
            .delete("second", &DeleteParams::default())
            .await
            .expect("delete");
        let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), NS);
        slices
            .delete("app-p1", &DeleteParams::default())
            .await
            .expect("delete slice");
        c.wait_gone("second").await;
        c.wait_route("app", "app", 0).await;
        let (status, _, _) = get(&c.url("/"), "second.test").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_held_requests_are_all_served_once() {
    const N: usize = 1000;
    bounded(async {
        let c = Cluster::start(test_config).await;
        let (addr, hits) = counting_backend("ok").await;
        c.service("app").await;
        c.route("app", "app.test", "app", json!({})).await;
        c.wait_route("app", "app", 0).await;

        let client = common::client();
        let mut tasks = Vec::with_capacity(N);
        for _ in 0..N {
            let client = client.clone();
            let url = c.url("/");
            tasks.push(tokio::spawn(async move {
                let req = http::Request::get(url)
                    .header(header::HOST, "app.test")
                    .body(common::empty())
                    .expect("request");
                let response = client.request(req).await.expect("response");
                let cold = response.headers().get("x-keda-http-cold-start").cloned();
                (response.status(), cold)
            }));
        }
        c.wait_in_flight("default/app", N as i64).await;
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        c.slice("app", "p1", addr, true).await;
        for task in tasks {
            let (status, cold) = task.await.expect("joined");
            assert_eq!(status, StatusCode::OK, "cold-start header: {cold:?}");
            assert_eq!(
                cold.as_ref().and_then(|v| v.to_str().ok()),
                Some("true"),
                "status {status}"
            );
        }
        assert_eq!(hits.load(Ordering::SeqCst), N, "none lost, none duplicated");
        assert_eq!(c.request_count("default/app"), N as i64);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_churn_finishes_in_flight_and_moves_new_requests() {
    bounded(async {
        let c = Cluster::start(test_config).await;
        // Pod A holds its first response until released; pod B answers at once.
        let (release_tx, release_rx) = tokio::sync::mpsc::channel::<()>(1);
        let release_rx = Arc::new(tokio::sync::Mutex::new(release_rx));
        let (entered_tx, mut entered_rx) = tokio::sync::mpsc::channel::<()>(1);
        let a = backend(move |_req| {
            let release_rx = Arc::clone(&release_rx);
            let entered_tx = entered_tx.clone();
            async move {
                let _ = entered_tx.send(()).await;
                let _ = release_rx.lock().await.recv().await;
                Response::new(full("a"))
            }
        })
        .await;
        let (b, b_hits) = counting_backend("b").await;
        c.service("app").await;
        c.slice("app", "pa", a, true).await;
        c.route("app", "app.test", "app", json!({})).await;
        c.wait_route("app", "app", 1).await;

        let url = c.url("/");
        let in_flight = tokio::spawn(async move { get(&url, "app.test").await });
        entered_rx.recv().await.expect("request reached pod A");

        // Pod A leaves (terminating), pod B arrives: new requests go to B only.
        let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), NS);
        slices
            .patch(
                "app-pa",
                &PatchParams::default(),
                &Patch::Merge(json!({"endpoints": [{"addresses": [a.ip().to_string()],
                    "conditions": {"ready": false, "serving": true, "terminating": true}}]})),
            )
            .await
            .expect("terminating");
        c.slice("app", "pb", b, true).await;
        let table = c.routes.load_full();
        let route = table
            .routes()
            .iter()
            .find(|r| &*r.key == "default/app")
            .expect("route");
        route
            .pool
            .ready()
            .wait_for(|s| s.ready.len() == 1 && s.ready.contains(&b))
            .await
            .expect("pool alive");
        for _ in 0..4 {
            let (status, _, body) = get(&c.url("/"), "app.test").await;
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"b"[..]));
        }
        assert_eq!(b_hits.load(Ordering::SeqCst), 4);

        // The request already at pod A finishes there.
        release_tx.send(()).await.expect("pod A waiting");
        let (status, _, body) = in_flight.await.expect("joined");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"a"[..]));
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interceptor_wide_bound_and_overflow_to_placeholder() {
    bounded(async {
        let c = Cluster::start(|config| {
            test_config(config);
            config.cold_start_max_pending_requests = 1;
        })
        .await;
        c.service("app").await;
        c.route("one", "one.test", "app", json!({})).await;
        c.route(
            "two",
            "two.test",
            "app",
            json!({"coldStart": {"maxPendingRequests": 5, "overflow": "Placeholder",
                   "placeholder": {"response": {"body": "busy"}}}}),
        )
        .await;
        c.wait_route("one", "app", 0).await;
        c.wait_route("two", "app", 0).await;

        let url = c.url("/");
        let held = tokio::spawn(async move { get(&url, "one.test").await });
        c.wait_in_flight("default/one", 1).await;
        // The interceptor holds one request in all: the next ones overflow.
        let (status, headers, _) = get(&c.url("/"), "one.test").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        let (status, _, body) = get(&c.url("/"), "two.test").await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::SERVICE_UNAVAILABLE, &b"busy"[..])
        );

        let (addr, _) = counting_backend("up").await;
        c.slice("app", "p1", addr, true).await;
        let (status, _, body) = held.await.expect("joined");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"up"[..]));
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespace_limits_every_watch() {
    bounded(async {
        let c = Cluster::start(|config| {
            test_config(config);
            config.watch_namespace = "team".into();
        })
        .await;
        let (addr, _) = counting_backend("team").await;
        c.service("app").await;
        c.slice("app", "p1", addr, true).await;
        c.route("outside", "outside.test", "app", json!({})).await;
        let in_team = |_kind: &str, mut value: Value| {
            value["metadata"]["namespace"] = json!("team");
            value
        };
        let services: Api<Service> = Api::namespaced(c.client.clone(), "team");
        services
            .create(
                &PostParams::default(),
                &serde_json::from_value(in_team(
                    "Service",
                    json!({"metadata": {"name": "app"},
                           "spec": {"ports": [{"name": "http", "port": 8080}]}}),
                ))
                .expect("service"),
            )
            .await
            .expect("create");
        let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "team");
        slices
            .create(
                &PostParams::default(),
                &serde_json::from_value(in_team(
                    "EndpointSlice",
                    slice_json("app", "p1", addr, true),
                ))
                .expect("slice"),
            )
            .await
            .expect("create");
        let routes: Api<InterceptorRoute> = Api::namespaced(c.client.clone(), "team");
        routes
            .create(
                &PostParams::default(),
                &serde_json::from_value(in_team(
                    "InterceptorRoute",
                    route_json("inside", "inside.test", "app", json!({})),
                ))
                .expect("route"),
            )
            .await
            .expect("create");
        c.wait_table(|t| t.routes().iter().any(|r| &*r.key == "team/inside"))
            .await;
        let table = c.routes.load_full();
        let inside = table
            .routes()
            .iter()
            .find(|r| &*r.key == "team/inside")
            .expect("route");
        inside
            .pool
            .ready()
            .wait_for(|s| !s.ready.is_empty())
            .await
            .expect("pool alive");
        let table = c.routes.load_full();
        assert!(
            table.routes().iter().all(|r| &*r.key != "default/outside"),
            "objects outside KEDA_HTTP_WATCH_NAMESPACE are not watched"
        );
        let (status, _, body) = get(&c.url("/"), "inside.test").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"team"[..]));
        let (status, _, _) = get(&c.url("/"), "outside.test").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_frees_its_hold_slot() {
    bounded(async {
        let c = Cluster::start(test_config).await;
        c.service("app").await;
        c.route("app", "app.test", "app", json!({})).await;
        c.wait_route("app", "app", 0).await;
        for version in ["HTTP/1.1", "HTTP/1.0"] {
            let mut stream = tokio::net::TcpStream::connect(c.addrs.proxy)
                .await
                .expect("connect");
            tokio::io::AsyncWriteExt::write_all(
                &mut stream,
                format!("GET / {version}\r\nHost: app.test\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
            c.wait_in_flight("default/app", 1).await;
            drop(stream);
            // The held request is dropped with its connection: no longer in flight.
            c.wait_in_flight("default/app", 0).await;
        }
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_direct_pod_routing_the_service_address_is_used() {
    bounded(async {
        let c = Cluster::start(|config| {
            test_config(config);
            config.direct_pod_routing = false;
        })
        .await;
        let (addr, hits) = counting_backend("pod").await;
        c.service("app").await;
        c.slice("app", "p1", addr, true).await;
        c.route("app", "app.test", "app", json!({})).await;
        c.wait_route("app", "app", 1).await;
        // `app.default:8080` is a cluster DNS name; here it does not resolve, so the request
        // fails at the connect (502) instead of reaching the pod directly.
        let (status, _, _) = get(&c.url("/"), "app.test").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_first_full_sync_then_ready_through_outages() {
    bounded(async {
        let api = LocalApiServer::start_with(loopback_backends())
            .await
            .expect("API server");
        // Every list fails until the faults run out: the first sync cannot complete.
        api.faults().fail_next(u64::MAX);
        let c = Cluster::launch(api, test_config).await;
        c.api
            .faults()
            .failures()
            .wait_for(|n| *n < u64::MAX - 5)
            .await
            .expect("faults");
        assert_eq!(c.readyz().await, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!c.routes.is_installed());
        c.api.faults().fail_next(0);
        c.wait_table(|_| true).await;
        assert_eq!(c.readyz().await, StatusCode::OK);

        // A later outage does not take readiness away.
        c.api.faults().fail_next(u64::MAX);
        c.api.faults().close_watches();
        let failing = c.api.faults().pending_failures();
        c.api
            .faults()
            .failures()
            .wait_for(|n| *n < failing)
            .await
            .expect("faults");
        assert_eq!(c.readyz().await, StatusCode::OK);
        c.api.faults().fail_next(0);
        c.stop().await;
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

/// `/readyz` fails once the routing table has not been refreshed within
/// `KEDA_HTTP_ROUTING_TABLE_MAX_STALENESS` because the route watches keep failing, and is
/// ready again once they deliver events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_the_routing_table_goes_stale() {
    bounded(async {
        let c = Cluster::start(|c| {
            test_config(c);
            c.routing_table_refresh_interval = Duration::from_millis(50);
            c.routing_table_max_staleness = Duration::from_millis(300);
        })
        .await;
        c.service("svc").await;
        c.route("fresh", "fresh.test", "svc", json!({})).await;
        c.wait_route("fresh", "svc", 0).await;
        assert_eq!(c.readyz().await, StatusCode::OK);

        // The API fails every request: the watches error and no refresh succeeds.
        c.api.faults().fail_next(u64::MAX);
        c.api.faults().close_watches();
        while c.readyz().await == StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(c.readyz().await, StatusCode::SERVICE_UNAVAILABLE);

        // The API is back and both route watches deliver an event: refreshed, ready again.
        c.api.faults().fail_next(0);
        c.route("again", "again.test", "svc", json!({})).await;
        c.create::<HTTPScaledObject>(json!({
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": {"name": "legacy"},
            "spec": {"hosts": ["legacy.test"],
                     "scaleTargetRef": {"name": "legacy", "service": "svc", "port": 8080}}
        }))
        .await;
        while c.readyz().await != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.stop().await;
    })
    .await;
}

/// Stores `body` as a server keeps an object written under an older, looser CRD (validation
/// only runs on writes): our decoder or validation refuses it, the server serves it.
fn store_poison(api: &LocalApiServer, version: &str, kind: &str, body: Value) {
    let kind = api
        .store()
        .find_kind("http.keda.sh", version, kind)
        .expect("kind registered");
    api.store()
        .create(
            &kind,
            Some(NS),
            body,
            &kube_standin::write::WriteOptions::default(),
        )
        .expect("stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_object_is_skipped_and_the_good_routes_are_served_after_a_restart() {
    bounded(async {
        let api = LocalApiServer::start_with(loopback_backends())
            .await
            .expect("API server");
        let client = api.client().await.expect("client");
        let (a, _) = counting_backend("a").await;
        let services: Api<Service> = Api::namespaced(client.clone(), NS);
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
        let routes: Api<InterceptorRoute> = Api::namespaced(client.clone(), NS);
        let httpsos: Api<HTTPScaledObject> = Api::namespaced(client.clone(), NS);
        let pp = PostParams::default();
        services
            .create(
                &pp,
                &serde_json::from_value(json!({
                    "metadata": {"name": "app"},
                    "spec": {"ports": [{"name": "http", "port": 8080}]}
                }))
                .expect("service"),
            )
            .await
            .expect("service");
        slices
            .create(
                &pp,
                &serde_json::from_value(slice_json("app", "p1", a, true)).expect("slice"),
            )
            .await
            .expect("slice");
        routes
            .create(
                &pp,
                &serde_json::from_value(route_json("good", "good.test", "app", json!({})))
                    .expect("route"),
            )
            .await
            .expect("route");
        let legacy = |name: &str, host: &str, extra: Value| {
            let mut spec = json!({"hosts": [host],
                                  "scaleTargetRef": {"name": name, "service": "app", "port": 8080}});
            if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
                spec.extend(extra);
            }
            json!({"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
                   "metadata": {"name": name}, "spec": spec})
        };
        httpsos
            .create(
                &pp,
                &serde_json::from_value(legacy("legacy", "legacy.test", json!({})))
                    .expect("httpso"),
            )
            .await
            .expect("httpso");
        // A duration beyond what any server-side rule lets through today, and a string where
        // a number belongs: neither decodes.
        store_poison(
            &api,
            "v1beta1",
            "InterceptorRoute",
            route_json(
                "poison",
                "poison.test",
                "app",
                json!({"timeouts": {"request": "99999999999999999999h"}}),
            ),
        );
        store_poison(
            &api,
            "v1alpha1",
            "HTTPScaledObject",
            legacy(
                "poison-legacy",
                "poison-legacy.test",
                json!({"targetPendingRequests": "many"}),
            ),
        );

        let c = Cluster::launch(api, test_config).await;
        c.wait_route("good", "app", 1).await;
        c.wait_route("legacy", "app", 1).await;
        assert_eq!(c.readyz().await, StatusCode::OK);
        let (status, _, body) = get(&c.url("/"), "good.test").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"a"[..]));
        let (status, _, body) = get(&c.url("/"), "legacy.test").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"a"[..]));
        for host in ["poison.test", "poison-legacy.test"] {
            let (status, _, _) = get(&c.url("/"), host).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{host}");
        }
        assert_eq!(c.invalid.get("InterceptorRoute"), 1);
        assert_eq!(c.invalid.get("HTTPScaledObject"), 1);
        let (_, _, metrics) = get(
            &format!("http://{}/metrics", c.addrs.metrics.expect("metrics listener")),
            "metrics",
        )
        .await;
        let metrics = String::from_utf8_lossy(&metrics);
        assert!(
            metrics.contains("keda_http_invalid_objects_total{kind=\"InterceptorRoute\"} 1"),
            "{metrics}"
        );

        // Fixed, it is routed like any new object; a relist does not report it again.
        routes
            .patch(
                "poison",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"timeouts": {"request": "5s"}}})),
            )
            .await
            .expect("fix");
        c.wait_route("poison", "app", 1).await;
        let (status, _, _) = get(&c.url("/"), "poison.test").await;
        assert_eq!(status, StatusCode::OK);
        c.api.faults().compact_history();
        c.api.faults().close_watches();
        routes
            .create(
                &pp,
                &serde_json::from_value(route_json("after", "after.test", "app", json!({})))
                    .expect("route"),
            )
            .await
            .expect("route after the relist");
        c.wait_route("after", "app", 1).await;
        assert_eq!(c.invalid.get("HTTPScaledObject"), 1, "reported once");
        c.stop().await;
    })
    .await;
}
