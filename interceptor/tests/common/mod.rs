//! Shared helpers: start the interceptor in-process, backends, clients, route builders.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keda_http_api::InterceptorRoute;
use keda_http_api::duration::GoDuration;
use keda_http_api::interceptor_route::RouteTimeouts;
use keda_http_api::routing::builders;
use keda_http_interceptor::endpoints::{EndpointSet, StaticEndpoints, Target, TargetPort};
use keda_http_interceptor::{BoundAddrs, Config, Interceptor, Phase, RouteTableHandle};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Every test is bounded by this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A running interceptor.
pub struct Harness {
    pub addrs: BoundAddrs,
    pub endpoints: Arc<StaticEndpoints>,
    pub routes: RouteTableHandle,
    pub queue: Arc<keda_http_interceptor::queue::Queue>,
    pub phase: watch::Receiver<Phase>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), keda_http_interceptor::Error>>>,
}

impl Harness {
    pub async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_tests();
        configure(&mut config);
        let endpoints = Arc::new(StaticEndpoints::default());
        let interceptor = Interceptor::bind(config, endpoints.clone())
            .await
            .expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let addrs = interceptor.addrs();
        let routes = interceptor.routes();
        let queue = interceptor.queue();
        let phase = interceptor.phase();
        let task = tokio::spawn(interceptor.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addrs,
            endpoints,
            routes,
            queue,
            phase,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Installs routes and sets each route's target endpoints.
    pub async fn install(&self, routes: Vec<InterceptorRoute>) {
        self.routes.install(routes, vec![]).await;
    }

    pub fn set_endpoints(&self, ns: &str, service: &str, port: i32, set: EndpointSet) {
        self.endpoints.set(target(ns, service, port), set);
    }

    /// Triggers shutdown (as SIGTERM would).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until the phase is at least `phase`.
    pub async fn wait_phase(&mut self, phase: Phase) {
        self.phase
            .wait_for(|p| *p >= phase)
            .await
            .expect("interceptor alive");
    }

    /// Shuts down and waits for `run` to return.
    pub async fn stop(mut self) {
        self.shutdown();
        if let Some(task) = self.task.take() {
            task.await.expect("joined").expect("run ok");
        }
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addrs.proxy, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addrs.admin, path)
    }

    /// Waits until `route` has `concurrency` requests in flight.
    pub async fn wait_concurrency(&self, key: &str, concurrency: i64) {
        let mut changes = self.queue.changes();
        loop {
            let now = self.queue.snapshot().0.get(key).map(|c| c.concurrency);
            if now == Some(concurrency) {
                return;
            }
            changes.changed().await.expect("queue alive");
        }
    }
}

pub fn target(ns: &str, service: &str, port: i32) -> Target {
    Target {
        namespace: ns.into(),
        service: service.into(),
        port: TargetPort::Number(port),
    }
}

/// An InterceptorRoute `ns/name` → `service:80` with one rule.
pub fn route(ns: &str, name: &str, hosts: &[&str], paths: &[&str]) -> InterceptorRoute {
    route_with(ns, name, service_of(name), hosts, paths, &[], None)
}

pub fn service_of(name: &str) -> &str {
    name
}

pub fn route_with(
    ns: &str,
    name: &str,
    service: &str,
    hosts: &[&str],
    paths: &[&str],
    headers: &[(&str, Option<&str>)],
    timeouts: Option<RouteTimeouts>,
) -> InterceptorRoute {
    let mut spec = builders::spec(vec![builders::rule(hosts, paths, headers)]);
    spec.target.service = service.into();
    spec.timeouts = timeouts;
    builders::interceptor_route(ns, name, spec)
}

pub fn timeouts(request: Option<Duration>, response_header: Option<Duration>) -> RouteTimeouts {
    RouteTimeouts {
        readiness: None,
        request: request.map(GoDuration),
        response_header: response_header.map(GoDuration),
    }
}

/// Starts an HTTP/1.1 + h2c backend answering with `handler`.
pub async fn backend<H, F>(handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A port nothing listens on.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

/// An HTTP/1.1 client (no pooling surprises: one connection per request is fine).
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(HttpConnector::new())
}

/// An h2c (prior knowledge) client.
pub fn h2c_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// GET `url` with `Host: host`; returns status, headers and body.
pub async fn get(url: &str, host: &str) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let req = Request::get(url)
        .header(http::header::HOST, host)
        .body(empty())
        .expect("request");
    let response = client().request(req).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

/// Sends raw bytes on a new connection and reads until the peer closes or `limit` bytes.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One response is enough: stop at the end of a complete small response.
                if response_complete(&out) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some(head_end) = text.find("\r\n\r\n") else {
        return false;
    };
    let head = text[..head_end].to_ascii_lowercase();
    let body_len = text.len() - head_end - 4;
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| body_len >= len)
}

/// Runs `fut` bounded by [`TEST_TIMEOUT`].
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, fut)
        .await
        .expect("test timed out")
}

pub fn http1(addrs: &[SocketAddr]) -> EndpointSet {
    EndpointSet::http1(addrs.iter().copied())
}
