//! CPU per request with OpenTelemetry tracing off and on (10% `traceidratio` sampler,
//! OTLP/HTTP export to an in-process sink), through the whole interceptor in this process:
//! client → interceptor → backend on 127.0.0.1, keep-alive connections, a fixed number of
//! requests per mode. The process's CPU time (client, interceptor, backend and sink together)
//! is divided by the requests; the difference between the modes is the tracing cost. Prints a
//! table with the on/off ratio; asserts nothing.
//!
//! `TRACING_BENCH_REQUESTS` (default 20000) and `TRACING_BENCH_CONCURRENCY` (default 4).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keda_http_api::InterceptorRoute;
use keda_http_benches::{env_u64, procfs, routes};
use keda_http_interceptor::endpoints::{EndpointSet, StaticEndpoints, Target, TargetPort};
use keda_http_interceptor::{Config, Interceptor};
use tokio::net::TcpListener;

/// A server answering every request with `body` (the backend, and the OTLP sink).
async fn answer(body: &'static str) -> SocketAddr {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("binding a local server: {e}"),
    };
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local addr: {e}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        body.as_bytes(),
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// CPU seconds and wall seconds of `requests` requests through an interceptor set up by
/// `configure`.
async fn measure(
    configure: impl FnOnce(&mut Config),
    backend: SocketAddr,
    requests: u64,
    concurrency: u64,
) -> (f64, f64) {
    let mut config = Config::for_tests();
    config.otel_prom_exporter_enabled = false;
    configure(&mut config);
    let endpoints = Arc::new(StaticEndpoints::default());
    let interceptor = match Interceptor::bind(config, endpoints.clone()).await {
        Ok(i) => i,
        Err(e) => panic!("starting the interceptor: {e}"),
    };
    let proxy = interceptor.addrs().proxy;
    let route: InterceptorRoute = match serde_json::from_value(routes::route(
        "app",
        "app",
        8080,
        serde_json::json!([{"hosts": ["app.bench"]}]),
    )) {
        Ok(r) => r,
        Err(e) => panic!("a valid route: {e}"),
    };
    endpoints.set(
        Target {
            namespace: routes::NAMESPACE.into(),
            service: "app".into(),
            port: TargetPort::Number(8080),
        },
        EndpointSet::http1([backend]),
    );
    interceptor.routes().install(vec![route], vec![]).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(interceptor.run(async move {
        let _ = stopped.await;
    }));

    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let run = |n: u64| {
        let client = client.clone();
        async move {
            let workers = (0..concurrency).map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    for _ in 0..n / concurrency {
                        let req = Request::get(format!("http://{proxy}/"))
                            .header(http::header::HOST, "app.bench")
                            .body(Empty::new())
                            .unwrap_or_else(|e| panic!("request: {e}"));
                        match client.request(req).await {
                            Ok(r) => {
                                assert!(r.status().is_success(), "status {}", r.status());
                                let _ = r.into_body().collect().await;
                            }
                            Err(e) => panic!("request failed: {e}"),
                        }
                    }
                })
            });
            for w in futures_join(workers).await {
                if let Err(e) = w {
                    panic!("worker: {e}");
                }
            }
        }
    };
    run(requests / 10).await; // warm-up
    let pid = std::process::id();
    let cpu0 = procfs::cpu_ticks(pid).unwrap_or(0);
    let wall = Instant::now();
    run(requests).await;
    let wall = wall.elapsed().as_secs_f64();
    let cpu = procfs::cpu_ticks(pid).unwrap_or(0).saturating_sub(cpu0) as f64
        / procfs::ticks_per_second() as f64;
    let _ = stop.send(());
    let _ = task.await;
    (cpu, wall)
}

async fn futures_join<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await);
    }
    out
}

fn main() {
    let requests = env_u64("TRACING_BENCH_REQUESTS", 20_000);
    let concurrency = env_u64("TRACING_BENCH_CONCURRENCY", 4).max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("a Tokio runtime: {e}"),
    };
    runtime.block_on(async {
        let backend = answer("ok").await;
        let sink = answer("").await;
        let off = measure(|_| {}, backend, requests, concurrency).await;
        let on = measure(
            |c| {
                c.otel_exporter_otlp_traces_enabled = true;
                c.otel_exporter_otlp_traces_protocol = "http/protobuf".into();
                c.otel.otel_exporter_otlp_endpoint = Some(format!("http://{sink}"));
                c.otel.otel_traces_sampler = Some("traceidratio".into());
                c.otel.otel_traces_sampler_arg = Some("0.1".into());
            },
            backend,
            requests,
            concurrency,
        )
        .await;
        let per = |(cpu, _): (f64, f64)| cpu * 1e6 / requests as f64;
        println!("tracing cost: {requests} requests, {concurrency} connections, whole process CPU");
        println!(
            "{:<28} {:>14} {:>12}",
            "mode", "CPU µs/request", "requests/s"
        );
        for (label, m) in [("tracing off", off), ("tracing on, 10% sampler", on)] {
            println!(
                "{label:<28} {:>14.1} {:>12.0}",
                per(m),
                requests as f64 / m.1
            );
        }
        let ratio = if per(off) > 0.0 {
            per(on) / per(off)
        } else {
            f64::NAN
        };
        println!("on / off CPU per request: {ratio:.3}");
    });
}
