//! Cold-start wake latency, run in a helper process (`KEDA_BENCH_ROLE=wake`).
//!
//! The interceptor runs in-process (library) on its own thread and current-thread runtime,
//! moved to the proxy core, because the measurement needs the endpoint event itself: the
//! harness holds `n` requests for a target without ready endpoints, then at `t0` makes an
//! endpoint ready through the interceptor's `EndpointSource` seam ([`StaticEndpoints::set`],
//! what the EndpointSlice watch calls); an in-process backend stamps each request's arrival.
//! Wake latency = arrival − `t0`; per round, the time until the last held request arrived is
//! "all at the backend". The baseline for the largest level: the same client opening as many
//! fresh connections at once straight to the backend, from `t0` to the last arrival. If the
//! interceptor answers a request for an endpoint-less target at once instead of holding it,
//! the run reports a skip.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keda_http_benches::openloop::LatencySummaryDto;
use keda_http_benches::process::pin_current_thread;
use keda_http_benches::routes;
use keda_http_benches::stats::Samples;
use keda_http_interceptor::endpoints::{EndpointSet, StaticEndpoints, Target, TargetPort};
use keda_http_interceptor::{Config, Interceptor};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The helper's configuration (JSON in `KEDA_BENCH_WAKE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WakeConfig {
    /// Numbers of requests held at once.
    pub(crate) levels: Vec<usize>,
    /// At least this many wakes per level.
    pub(crate) wakes: usize,
    /// CPU for the interceptor's thread.
    pub(crate) proxy_cpu: Option<usize>,
}

/// Wake latencies of one level.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WakeLevel {
    pub(crate) held: usize,
    pub(crate) rounds: usize,
    pub(crate) latency: Option<LatencySummaryDto>,
    /// Per round, µs from the event to the last request's arrival.
    pub(crate) all_arrived_us: Vec<u64>,
}

/// The same client sending `requests` requests at once over fresh connections straight to
/// the backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DirectBaseline {
    pub(crate) requests: usize,
    /// Per round, µs from the start to the last request's arrival.
    pub(crate) all_arrived_us: Vec<u64>,
}

/// The helper's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WakeResult {
    /// The interceptor does not hold requests.
    Skipped(String),
    /// Measured.
    Levels(Vec<WakeLevel>, Option<DirectBaseline>),
}

const WAKE_HOST: &str = "wake.example.com";
const WAKE_ROUTE: &str = "wake";
const BOUND: Duration = Duration::from_secs(60);
/// Rounds per level at least (the time until all arrived is one number per round).
const MIN_ROUNDS: usize = 3;

fn target() -> Target {
    Target {
        namespace: routes::NAMESPACE.into(),
        service: WAKE_ROUTE.into(),
        port: TargetPort::Number(8080),
    }
}

/// Runs the wake measurement (in the helper process).
pub(crate) fn run(config: &WakeConfig) -> anyhow::Result<WakeResult> {
    let endpoints = Arc::new(StaticEndpoints::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let interceptor_thread = {
        let endpoints = Arc::clone(&endpoints);
        let proxy_cpu = config.proxy_cpu;
        std::thread::spawn(move || -> anyhow::Result<()> {
            if let Some(cpu) = proxy_cpu {
                pin_current_thread(cpu);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut config = Config::for_tests();
                // Hold every request of the largest level (0 = no per-interceptor bound).
                config.cold_start_max_pending_requests = 0;
                let interceptor = Interceptor::bind(config, endpoints).await?;
                let route: keda_http_api::InterceptorRoute =
                    serde_json::from_value(routes::route(
                        WAKE_ROUTE,
                        WAKE_ROUTE,
                        8080,
                        serde_json::json!([{"hosts": [WAKE_HOST]}]),
                    ))?;
                interceptor.routes().install(vec![route], Vec::new()).await;
                let _ = ready_tx.send((interceptor.addrs().proxy, interceptor.queue()));
                interceptor
                    .run(async move {
                        let _ = stop_rx.await;
                    })
                    .await?;
                anyhow::Ok(())
            })
        })
    };
    let (proxy, queue) = ready_rx
        .recv_timeout(Duration::from_secs(30))
        .context("the in-process interceptor did not start")?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(measure(config, proxy, &queue, &endpoints));
    let _ = stop_tx.send(());
    let _ = interceptor_thread.join();
    result
}

/// A backend that stamps each request's arrival.
async fn backend() -> anyhow::Result<(SocketAddr, mpsc::UnboundedReceiver<Instant>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let _ = tx.send(Instant::now());
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, rx))
}

async fn measure(
    config: &WakeConfig,
    proxy: SocketAddr,
    queue: &keda_http_interceptor::queue::Queue,
    endpoints: &StaticEndpoints,
) -> anyhow::Result<WakeResult> {
    let (backend, mut arrivals) = backend().await?;
    let new_client = || {
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .build_http::<Empty<Bytes>>()
    };
    let client = new_client();
    let request = move || {
        let client = client.clone();
        async move {
            let req = http::Request::get(format!("http://{proxy}/"))
                .header(http::header::HOST, WAKE_HOST)
                .body(Empty::new())?;
            let resp = client.request(req).await?;
            anyhow::Ok(resp.status())
        }
    };
    let key = format!("{}/{WAKE_ROUTE}", routes::NAMESPACE);
    let in_flight = || queue.get(&key).map_or(0, |c| c.get().concurrency);

    // Is a request for a target without ready endpoints held?
    let probe = tokio::spawn(request());
    match tokio::time::timeout(Duration::from_secs(1), probe).await {
        Ok(Ok(Ok(status))) => {
            return Ok(WakeResult::Skipped(format!(
                "a request for a target without ready endpoints was answered {status} at once \
                 instead of being held"
            )));
        }
        Ok(Ok(Err(e))) => return Ok(WakeResult::Skipped(format!("the probe failed: {e:#}"))),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {}
    }
    // Held: release it and start from a cold target.
    endpoints.set(target(), EndpointSet::http1([backend]));
    tokio::time::timeout(BOUND, arrivals.recv()).await?;

    let mut levels = Vec::new();
    for &held in &config.levels {
        let rounds = config.wakes.div_ceil(held.max(1)).max(MIN_ROUNDS);
        let mut samples = Samples::with_capacity(rounds * held);
        let mut all_arrived_us = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            endpoints.set(target(), EndpointSet::default());
            tokio::time::sleep(Duration::from_millis(20)).await;
            while arrivals.try_recv().is_ok() {}
            let calls: Vec<_> = (0..held).map(|_| tokio::spawn(request())).collect();
            let deadline = Instant::now() + BOUND;
            while in_flight() < held as i64 {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "only {} of {held} requests were held",
                    in_flight()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            let t0 = Instant::now();
            endpoints.set(target(), EndpointSet::http1([backend]));
            let mut last = 0;
            for _ in 0..held {
                let at = tokio::time::timeout(BOUND, arrivals.recv())
                    .await
                    .context("held requests did not reach the backend")?
                    .context("backend stopped")?;
                let us = at.saturating_duration_since(t0).as_micros() as u64;
                last = last.max(us);
                samples.push(us);
            }
            all_arrived_us.push(last);
            for call in calls {
                call.await??;
            }
        }
        levels.push(WakeLevel {
            held,
            rounds,
            latency: samples.summary().map(Into::into),
            all_arrived_us,
        });
    }

    // The baseline: as many requests as the largest level, fresh connections, no proxy.
    let mut baseline = None;
    if let Some(&requests) = config.levels.iter().max() {
        let rounds = config.wakes.div_ceil(requests.max(1)).max(MIN_ROUNDS);
        let mut all_arrived_us = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            tokio::time::sleep(Duration::from_millis(20)).await;
            while arrivals.try_recv().is_ok() {}
            // A new pool per round: every request opens its own connection.
            let client = new_client();
            let t0 = Instant::now();
            let calls: Vec<_> = (0..requests)
                .map(|_| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let req = http::Request::get(format!("http://{backend}/"))
                            .header(http::header::HOST, WAKE_HOST)
                            .body(Empty::new())?;
                        anyhow::Ok(client.request(req).await?.status())
                    })
                })
                .collect();
            let mut last = 0;
            for _ in 0..requests {
                let at = tokio::time::timeout(BOUND, arrivals.recv())
                    .await
                    .context("direct requests did not reach the backend")?
                    .context("backend stopped")?;
                last = last.max(at.saturating_duration_since(t0).as_micros() as u64);
            }
            all_arrived_us.push(last);
            for call in calls {
                call.await??;
            }
        }
        baseline = Some(DirectBaseline {
            requests,
            all_arrived_us,
        });
    }
    Ok(WakeResult::Levels(levels, baseline))
}
