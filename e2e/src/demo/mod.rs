//! The `demo`: the seed's walk-through on one machine.
//!
//! Starts the [`Harness`] with all three product binaries, applies the hello app as the
//! hello chart renders it (0 replicas, InterceptorRoute + ScaledObject), sends a first request
//! and reports the cold start, runs an open-loop load phase while printing a timeline row
//! every second (replicas, ready endpoints, in-flight, rps, p50/p99, errors), stops the load,
//! follows the scale back to zero, prints a summary and stops everything it started.

pub mod manifests;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use tokio::time::Instant;

use crate::harness::{self, Components, Harness, HarnessConfig};
use manifests::HelloValues;

/// Demo errors.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The harness failed.
    #[error(transparent)]
    Harness(#[from] harness::Error),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// The first request never succeeded.
    #[error("the first request did not succeed within {0:?}: {1}")]
    ColdStart(Duration, String),
}

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Requests per second in the load phase.
    pub rate: f64,
    /// Length of the load phase.
    pub duration: Duration,
    /// The hello chart's values.
    pub values: HelloValues,
    /// Run `cargo build` for the binaries first.
    pub build: bool,
    /// Bound on the first request (cold start).
    pub cold_start_timeout: Duration,
    /// Bound on the scale back to zero after the load.
    pub scale_down_timeout: Duration,
    /// Show the product binaries' logs.
    pub verbose: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            rate: 20.0,
            duration: Duration::from_secs(20),
            values: HelloValues::default(),
            build: true,
            cold_start_timeout: Duration::from_secs(60),
            scale_down_timeout: Duration::from_secs(60),
            verbose: false,
        }
    }
}

/// What the demo measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Time to the first 200 from zero replicas.
    pub cold_start: Duration,
    /// Requests sent in the load phase.
    pub requests: u64,
    /// Of those, not `200` (or failed).
    pub errors: u64,
    /// Latency percentiles over the load phase.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The most replicas seen.
    pub max_replicas: i32,
    /// From the end of the load to zero replicas, if reached.
    pub to_zero: Option<Duration>,
}

/// One completed request.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    latency: Duration,
    ok: bool,
}

#[derive(Default)]
struct Load {
    samples: Mutex<Vec<Sample>>,
    in_flight: AtomicI64,
}

impl Load {
    /// Latencies (sorted) and error count of the requests completed in `[from, to)`.
    fn window(&self, from: Instant, to: Instant) -> (Vec<Duration>, usize) {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let in_window: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .collect();
        let errors = in_window.iter().filter(|s| !s.ok).count();
        let mut latencies: Vec<Duration> = in_window.iter().map(|s| s.latency).collect();
        latencies.sort();
        (latencies, errors)
    }
}

type Http = HttpClient<HttpConnector, Empty<Bytes>>;

/// `GET /` through the interceptor with the route's Host; the status (0 on a transport error).
async fn request(http: &Http, proxy: SocketAddr, host: &str) -> u16 {
    let Ok(req) = http::Request::get(format!("http://{proxy}/"))
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
    else {
        return 0;
    };
    let call = async {
        let response = http.request(req).await.ok()?;
        let status = response.status().as_u16();
        response.into_body().collect().await.ok()?;
        Some(status)
    };
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// The `q` quantile (0..=1) of sorted `values`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Replicas (`spec.replicas`) and ready endpoints of the hello app.
async fn observe(deployments: &Api<Deployment>, slices: &Api<EndpointSlice>) -> (i32, usize) {
    let replicas = deployments
        .get("hello")
        .await
        .ok()
        .and_then(|d| d.spec.replicas)
        .unwrap_or(0);
    let ready = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=hello"))
        .await
        .map(|list| {
            list.items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count()
        })
        .unwrap_or(0);
    (replicas, ready)
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Runs the demo, writing the timeline and summary to `out`.
pub async fn run(options: DemoOptions, out: &mut dyn Write) -> Result<Summary, DemoError> {
    if options.build {
        writeln!(out, "building the binaries (cargo build)...")?;
        harness::build_binaries(&[
            "keda-http-interceptor",
            "keda-http-scaler",
            "keda-http-operator",
            "hello",
        ])
        .await?;
    }
    let mut config = HarnessConfig::from_env()?;
    config.components = Components::all();
    config.inherit_output = options.verbose;
    config.simulator.start_delay = Duration::from_millis(300);
    writeln!(
        out,
        "starting the local cluster (API, workload simulator, KEDA stand-in) and the add-on..."
    )?;
    let harness = Harness::start(config).await?;
    let result = walk_through(&harness, &options, out).await;
    writeln!(out, "stopping everything the demo started...")?;
    harness.stop().await;
    let summary = result?;
    writeln!(out, "done.")?;
    Ok(summary)
}

/// What the walk-through's steps share: the hello app's objects, the HTTP client and the
/// interceptor's proxy address.
struct Hello {
    deployments: Api<Deployment>,
    slices: Api<EndpointSlice>,
    http: Http,
    proxy: SocketAddr,
}

/// The story, step by step: apply the app, wait for zero, time the cold start, run the load
/// with a timeline each second until the app is back at zero, print the summary.
async fn walk_through(
    harness: &Harness,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<Summary, DemoError> {
    let hello = apply_hello(harness, &options.values, out).await?;
    wait_for_zero(&hello, options, out).await?;
    let cold_start = first_request(&hello, options, out).await?;

    write_timeline_header(options, out)?;
    let load = Arc::new(Load::default());
    let start = Instant::now();
    let generator = spawn_load(&hello, options, load.clone(), start);
    let mut summary = Summary {
        cold_start,
        ..Summary::default()
    };
    timeline(&hello, options, &load, &generator, start, &mut summary, out).await?;
    summarise_load(&load, &mut summary);
    write_summary(&summary, options, out)?;
    Ok(summary)
}

/// Applies the hello chart's objects and opens what the other steps use.
async fn apply_hello(
    harness: &Harness,
    values: &HelloValues,
    out: &mut dyn Write,
) -> Result<Hello, DemoError> {
    harness
        .apply_yaml(&manifests::hello_yaml(values), "default")
        .await?;
    writeln!(
        out,
        "applied the hello app (Deployment, Service, InterceptorRoute, ScaledObject): host {}, \
         target concurrency {}, {} ms per request, cooldown {} s",
        values.host, values.target_concurrency, values.delay_ms, values.cooldown_seconds
    )?;
    let client = harness.client();
    Ok(Hello {
        deployments: Api::namespaced(client.clone(), "default"),
        slices: Api::namespaced(client, "default"),
        http: HttpClient::builder(TokioExecutor::new()).build_http(),
        proxy: harness.proxy_addr(),
    })
}

/// Waits for zero replicas (KEDA takes the chart's Deployment, created at 1, down to 0).
async fn wait_for_zero(
    hello: &Hello,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<(), DemoError> {
    let settle = Instant::now();
    while observe(&hello.deployments, &hello.slices).await != (0, 0)
        && settle.elapsed() < options.scale_down_timeout
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writeln!(out, "hello is at 0 replicas; sending the first request...")?;
    Ok(())
}

/// The first request, timed. A 404 means the interceptor has not seen the route yet; those
/// (and any other failure) are retried until the cold-start timeout.
async fn first_request(
    hello: &Hello,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<Duration, DemoError> {
    let first = Instant::now();
    let cold_start = loop {
        let sent = Instant::now();
        let status = request(&hello.http, hello.proxy, &options.values.host).await;
        if status == 200 {
            break sent.elapsed();
        }
        if first.elapsed() > options.cold_start_timeout {
            let hint = match status {
                0 => "no response from the interceptor proxy",
                404 => {
                    "404: the interceptor has no route for the host (is it watching InterceptorRoutes?)"
                }
                502..=504 => "the interceptor could not reach a ready hello endpoint in time",
                _ => "unexpected status",
            };
            return Err(DemoError::ColdStart(
                options.cold_start_timeout,
                format!("last status {status}; {hint}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    writeln!(
        out,
        "cold start: first response after {} ms",
        ms(cold_start)
    )?;
    Ok(cold_start)
}

/// The load line and the timeline's column heads.
fn write_timeline_header(options: &DemoOptions, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "load: {} req/s for {} s\n{:>4} {:>8} {:>6} {:>9} {:>6} {:>7} {:>7} {:>6}",
        options.rate,
        options.duration.as_secs(),
        "t",
        "replicas",
        "ready",
        "in-flight",
        "rps",
        "p50ms",
        "p99ms",
        "errors"
    )
}

/// Sends `options.rate` requests a second for `options.duration` from `start`, each recorded
/// in `load`; the task ends when the last response is in.
fn spawn_load(
    hello: &Hello,
    options: &DemoOptions,
    load: Arc<Load>,
    start: Instant,
) -> tokio::task::JoinHandle<()> {
    let http = hello.http.clone();
    let proxy = hello.proxy;
    let host = options.values.host.clone();
    let period = Duration::from_secs_f64(1.0 / options.rate.max(0.1));
    let duration = options.duration;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        let mut tasks = tokio::task::JoinSet::new();
        while start.elapsed() < duration {
            ticker.tick().await;
            let load = load.clone();
            let http = http.clone();
            let host = host.clone();
            tasks.spawn(async move {
                load.in_flight.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let status = request(&http, proxy, &host).await;
                load.in_flight.fetch_sub(1, Ordering::Relaxed);
                let sample = Sample {
                    at: Instant::now(),
                    latency: sent.elapsed(),
                    ok: status == 200,
                };
                load.samples
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(sample);
            });
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// One timeline line a second (replicas, ready endpoints, in flight, the second's requests,
/// p50, p99, errors) until the app is back at zero after the load, or the scale-down timeout
/// passed. Records the highest replica count and the time back to zero in `summary`.
async fn timeline(
    hello: &Hello,
    options: &DemoOptions,
    load: &Load,
    generator: &tokio::task::JoinHandle<()>,
    start: Instant,
    summary: &mut Summary,
    out: &mut dyn Write,
) -> Result<(), DemoError> {
    let mut second = 0u64;
    let mut load_ended: Option<Instant> = None;
    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        ticker.tick().await;
        second += 1;
        let (replicas, ready) = observe(&hello.deployments, &hello.slices).await;
        summary.max_replicas = summary.max_replicas.max(replicas);
        let (latencies, errors) = load.window(
            start + Duration::from_secs(second - 1),
            start + Duration::from_secs(second),
        );
        writeln!(
            out,
            "{:>3}s {:>8} {:>6} {:>9} {:>6} {:>7} {:>7} {:>6}",
            second,
            replicas,
            ready,
            load.in_flight.load(Ordering::Relaxed),
            latencies.len(),
            ms(quantile(&latencies, 0.5)),
            ms(quantile(&latencies, 0.99)),
            errors
        )?;
        if load_ended.is_none() && generator.is_finished() {
            load_ended = Some(Instant::now());
            writeln!(out, "load stopped; waiting for the scale back to zero...")?;
        }
        if let Some(ended) = load_ended {
            if replicas == 0 && ready == 0 {
                summary.to_zero = Some(ended.elapsed());
                return Ok(());
            }
            if ended.elapsed() > options.scale_down_timeout {
                return Ok(());
            }
        }
    }
}

/// Request count, errors and latency quantiles of the whole load phase.
fn summarise_load(load: &Load, summary: &mut Summary) {
    let samples = load.samples.lock().unwrap_or_else(PoisonError::into_inner);
    summary.requests = samples.len() as u64;
    summary.errors = samples.iter().filter(|s| !s.ok).count() as u64;
    let mut all: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    all.sort();
    summary.p50 = quantile(&all, 0.5);
    summary.p99 = quantile(&all, 0.99);
}

/// The summary block that ends the demo.
fn write_summary(
    summary: &Summary,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "\nsummary")?;
    writeln!(
        out,
        "  cold start (0 -> first 200)  {} ms",
        ms(summary.cold_start)
    )?;
    writeln!(
        out,
        "  load phase                   {} requests, {} failed, p50 {} ms, p99 {} ms",
        summary.requests,
        summary.errors,
        ms(summary.p50),
        ms(summary.p99)
    )?;
    writeln!(
        out,
        "  replicas                     0 -> {} -> {}",
        summary.max_replicas,
        if summary.to_zero.is_some() {
            "0"
        } else {
            "not yet 0"
        }
    )?;
    match summary.to_zero {
        Some(d) => writeln!(
            out,
            "  back to zero                 {} s after the load",
            d.as_secs()
        ),
        None => writeln!(
            out,
            "  back to zero                 not within {} s",
            options.scale_down_timeout.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
        assert_eq!(
            quantile(&[Duration::from_millis(7)], 0.99),
            Duration::from_millis(7)
        );
    }
}
