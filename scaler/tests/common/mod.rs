//! Shared pieces of the scaler's acceptance tests: fake interceptors (a `/queue` and
//! `/queue/watch` server on 127.0.0.1 that the test controls) and an in-process scaler on a
//! loopback port with a gRPC client built from the same proto.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keda_http_api::queue::{QueueCount, QueueCounts};
use keda_http_scaler::aggregate::{Aggregator, QueueState};
use keda_http_scaler::discovery::{self, Interceptors};
use keda_http_scaler::metrics::Metrics;
use keda_http_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_http_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use keda_http_scaler::targets::StaticTargets;
use keda_http_scaler::{Scaler, Settings};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::WatchStream;
use tonic::transport::Channel;

/// Every test body runs under this bound.
pub const TEST_BOUND: Duration = Duration::from_secs(60);

/// Runs `fut`, failing the test if it takes longer than [`TEST_BOUND`].
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_BOUND, fut)
        .await
        .expect("test exceeded its time bound")
}

type Body = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct FakeState {
    hang_queue: AtomicBool,
    watch_disabled: AtomicBool,
    polls: AtomicUsize,
    hung: watch::Sender<usize>,
    watchers: watch::Sender<usize>,
    watches_opened: AtomicUsize,
    epoch: watch::Sender<u64>,
}

/// A fake interceptor admin server: `GET /queue` answers the current counts, `GET
/// /queue/watch` streams them (a line at once, then a line per change).
pub struct FakeInterceptor {
    pub addr: SocketAddr,
    counts: watch::Sender<QueueCounts>,
    state: Arc<FakeState>,
    task: JoinHandle<()>,
}

impl FakeInterceptor {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (counts, _) = watch::channel(QueueCounts::default());
        let state = Arc::new(FakeState::default());
        let task = {
            let counts = counts.clone();
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let mut connections = JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let counts = counts.clone();
                    let state = Arc::clone(&state);
                    let service = service_fn(move |req: Request<Incoming>| {
                        let counts = counts.clone();
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(req, counts, state).await) }
                    });
                    connections.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Self {
            addr,
            counts,
            state,
            task,
        }
    }

    /// Sets one route's counts (and pushes a line to every watcher).
    pub fn set(&self, key: &str, concurrency: i64, request_count: i64) {
        self.counts.send_modify(|c| {
            c.0.insert(
                key.to_owned(),
                QueueCount {
                    concurrency,
                    request_count,
                },
            );
        });
    }

    /// `/queue` requests stop answering (they hang until the server goes away).
    pub fn hang_queue(&self, hang: bool) {
        self.state.hang_queue.store(hang, Ordering::SeqCst);
    }

    /// `/queue/watch` answers 404, as the official interceptor does.
    pub fn disable_watch(&self) {
        self.state.watch_disabled.store(true, Ordering::SeqCst);
    }

    /// `/queue/watch` streams again.
    pub fn enable_watch(&self) {
        self.state.watch_disabled.store(false, Ordering::SeqCst);
    }

    /// Ends every open `/queue/watch` stream (the connection stays up).
    pub fn cut_watchers(&self) {
        self.state.epoch.send_modify(|e| *e += 1);
    }

    /// Number of `/queue/watch` streams opened so far.
    pub fn watches_opened(&self) -> usize {
        self.state.watches_opened.load(Ordering::SeqCst)
    }

    /// Number of `/queue` requests received.
    pub fn polls(&self) -> usize {
        self.state.polls.load(Ordering::SeqCst)
    }

    /// Waits until `n` `/queue` requests are hanging.
    pub async fn wait_hung(&self, n: usize) {
        let mut rx = self.state.hung.subscribe();
        rx.wait_for(|v| *v >= n).await.expect("fake alive");
    }

    /// Number of `/queue` requests hanging now.
    pub fn hung(&self) -> usize {
        *self.state.hung.borrow()
    }

    /// Waits until `n` watch streams are open.
    pub async fn wait_watchers(&self, n: usize) {
        let mut rx = self.state.watchers.subscribe();
        rx.wait_for(|v| *v >= n).await.expect("fake alive");
    }

    /// Stops serving: open connections drop and new connections are refused.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for FakeInterceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decrements a counter when dropped.
struct Gauge(watch::Sender<usize>);

impl Gauge {
    fn new(tx: &watch::Sender<usize>) -> Self {
        tx.send_modify(|v| *v += 1);
        Self(tx.clone())
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.send_modify(|v| *v = v.saturating_sub(1));
    }
}

async fn handle(
    req: Request<Incoming>,
    counts: watch::Sender<QueueCounts>,
    state: Arc<FakeState>,
) -> Response<Body> {
    match req.uri().path() {
        "/queue" => {
            state.polls.fetch_add(1, Ordering::SeqCst);
            if state.hang_queue.load(Ordering::SeqCst) {
                let _hung = Gauge::new(&state.hung);
                std::future::pending::<()>().await;
            }
            let body = counts.borrow().to_body();
            Response::new(Full::new(Bytes::from(body)).boxed())
        }
        "/queue/watch" if !state.watch_disabled.load(Ordering::SeqCst) => {
            state.watches_opened.fetch_add(1, Ordering::SeqCst);
            let gauge = Arc::new(Gauge::new(&state.watchers));
            let mut epoch = state.epoch.subscribe();
            let cut = async move {
                let _ = epoch.changed().await;
            };
            let lines = WatchStream::new(counts.subscribe())
                .map(move |c| {
                    let _keep = &gauge;
                    Ok::<_, Infallible>(Frame::data(Bytes::from(c.to_body())))
                })
                .take_until(cut);
            Response::new(http_body_util::BodyExt::boxed(StreamBody::new(lines)))
        }
        _ => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"404")).boxed());
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
    }
}

/// A scaler on a loopback port, with the handles a test needs.
pub struct TestScaler {
    pub addr: SocketAddr,
    pub client: ExternalScalerClient<Channel>,
    pub channel: Channel,
    pub targets: Arc<StaticTargets>,
    pub interceptors: watch::Sender<Interceptors>,
    pub state: Arc<QueueState>,
    pub registry: Arc<Mutex<Registry>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), keda_http_scaler::Error>>>,
}

impl TestScaler {
    pub async fn start(settings: Settings, interceptors: &[&FakeInterceptor]) -> Self {
        let (tx, rx) = discovery::fixed(interceptors.iter().map(|i| i.addr));
        let targets = Arc::new(StaticTargets::new());
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let scaler = Scaler::new(settings, rx, targets.clone(), metrics);
        let state = scaler.state();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(scaler.serve(listener, async move {
            let _ = stop_rx.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the scaler");
        Self {
            addr,
            client: ExternalScalerClient::new(channel.clone()),
            channel,
            targets,
            interceptors: tx,
            state,
            registry: Arc::new(Mutex::new(registry)),
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Waits until the aggregate satisfies `ready` (checked after every change).
    pub async fn wait_for(&self, mut ready: impl FnMut(&mut Aggregator) -> bool) {
        let mut changes = self.state.subscribe();
        loop {
            if ready(&mut self.state.lock()) {
                return;
            }
            changes.changed().await.expect("scaler alive");
        }
    }

    /// Graceful shutdown; the serve future must end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("scaler task").expect("scaler result");
        }
    }
}

impl Drop for TestScaler {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Settings for tests: short drain, the given tick, the stream interval.
pub fn settings(tick: Duration, stream_interval: Duration, push: bool) -> Settings {
    Settings {
        tick,
        fetch_timeout: tick.max(Duration::from_millis(250)),
        stream_interval,
        push,
        drain_timeout: Duration::from_secs(2),
    }
}

/// A ScaledObjectRef with the given metadata.
pub fn so_ref(namespace: &str, name: &str, meta: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        scaler_metadata: meta
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<std::collections::HashMap<_, _>>(),
    }
}

/// A GetMetricsRequest.
pub fn metrics_req(sor: &ScaledObjectRef, metric_name: &str) -> GetMetricsRequest {
    GetMetricsRequest {
        scaled_object_ref: Some(sor.clone()),
        metric_name: metric_name.to_owned(),
    }
}

/// Metric values by name.
pub fn by_name(values: &[keda_http_scaler::proto::MetricValue]) -> BTreeMap<String, (i64, f64)> {
    values
        .iter()
        .map(|v| {
            (
                v.metric_name.clone(),
                (v.metric_value, v.metric_value_float),
            )
        })
        .collect()
}
