//! Micro benchmarks of the interceptor's hot path (criterion):
//!
//! - `route_lookup/<kind>/<routes>`: one request's table lookup (`ArcSwap` load + match) in
//!   tables of 10, 1,000 and 10,000 routes, for an exact host, a wildcard, a path prefix, a
//!   header matcher and a miss;
//! - `route_table_rebuild/10000`: building the index alone, and a whole install (queue keys,
//!   endpoint pools, index, swap) of a changed 10,000-route table;
//! - `counters/*`: a request's in-flight enter + leave on one route, alone and with two
//!   threads on the same route, on an idle route (every request crosses 0 ↔ 1 and notifies
//!   `/queue/watch`) and on a busy one (no notification);
//! - `endpoint_pick/<endpoints>`: round-robin selection through the pingora balancer.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use keda_http_api::InterceptorRoute;
use keda_http_benches::routes::{self, Kind};
use keda_http_interceptor::endpoints::{
    EndpointSet, Endpoints, StaticEndpoints, Target, TargetPort,
};
use keda_http_interceptor::queue::Queue;
use keda_http_interceptor::routing::{RouteIndex, RouteTableHandle};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("a Tokio runtime for the benchmarks: {e}"),
    }
}

fn interceptor_routes(n: usize) -> Vec<InterceptorRoute> {
    routes::synthetic(n)
        .into_iter()
        .map(|v| match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => panic!("synthetic routes are valid InterceptorRoutes: {e}"),
        })
        .collect()
}

fn handle() -> RouteTableHandle {
    RouteTableHandle::new(
        Arc::new(Queue::default()),
        Arc::new(Endpoints::new(Arc::new(StaticEndpoints::default()))),
    )
}

fn headers(query: &routes::Query) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("wrk/4.2"),
    );
    map.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
    if let Some((name, value)) = query.header {
        map.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    map
}

fn route_lookup(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("route_lookup");
    for n in SIZES {
        let table = handle();
        rt.block_on(table.install(interceptor_routes(n), Vec::new()));
        for kind in Kind::ALL {
            let query = routes::query(kind, n);
            let headers = headers(&query);
            // The benchmark is only worth its number if the lookup finds the right route.
            let found = table
                .load()
                .route(&query.host, &query.path, &headers)
                .map(|r| r.source.name.to_string());
            assert_eq!(found, query.expect, "{} in {n} routes", kind.name());
            group.bench_with_input(BenchmarkId::new(kind.name(), n), &query, |b, q| {
                b.iter(|| {
                    let snapshot = table.load();
                    let route = snapshot.route(black_box(&q.host), black_box(&q.path), &headers);
                    black_box(route.map(|r| Arc::as_ptr(&r.counters)));
                });
            });
        }
    }
    group.finish();
}

fn route_table_rebuild(c: &mut Criterion) {
    let rt = runtime();
    let n = 10_000;
    let routes = interceptor_routes(n);
    let sources = keda_http_api::routing::collect_unchecked(&routes, &[]).sources;
    let mut group = c.benchmark_group("route_table_rebuild");
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("index", n), |b| {
        b.iter(|| black_box(RouteIndex::build(black_box(&sources))));
    });
    // A whole install where one route changed: counters and pools are reused, the index and
    // the bound routes are new.
    let table = handle();
    rt.block_on(table.install_sources(sources.clone()));
    group.bench_function(BenchmarkId::new("install", n), |b| {
        b.to_async(&rt).iter_batched(
            || {
                let mut next = sources.clone();
                if let Some(first) = next.first_mut() {
                    first.spec.rules[0].hosts = vec!["changed.example.com".into()];
                }
                next
            },
            |next| {
                let table = table.clone();
                async move { black_box(table.install_sources(next).await) }
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn counters(c: &mut Criterion) {
    let queue = Queue::default();
    let route = match queue.retain_keys(["bench/hello"]).remove("bench/hello") {
        Some(r) => r,
        None => panic!("the key was just added"),
    };
    let mut group = c.benchmark_group("counters");
    group.bench_function("enter_leave/1_thread", |b| {
        b.iter(|| drop(black_box(route.enter())));
    });
    // Two threads enter and leave the same route; the time is per enter+leave on one thread
    // while the other does the same.
    group.bench_function("enter_leave/2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Arc::new(Barrier::new(2));
            let other = {
                let route = Arc::clone(&route);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..iters {
                        drop(black_box(route.enter()));
                    }
                })
            };
            start.wait();
            let t = Instant::now();
            for _ in 0..iters {
                drop(black_box(route.enter()));
            }
            let mine = t.elapsed();
            let _ = other.join();
            mine
        });
    });
    // A long-lived request keeps the route active, so enter/leave never crosses 0 ↔ 1 (no
    // change notification): the common case under load.
    let held = route.enter();
    group.bench_function("enter_leave/1_thread_busy_route", |b| {
        b.iter(|| drop(black_box(route.enter())));
    });
    group.bench_function("enter_leave/2_threads_busy_route", |b| {
        b.iter_custom(|iters| {
            let start = Arc::new(Barrier::new(2));
            let other = {
                let route = Arc::clone(&route);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..iters {
                        drop(black_box(route.enter()));
                    }
                })
            };
            start.wait();
            let t = Instant::now();
            for _ in 0..iters {
                drop(black_box(route.enter()));
            }
            let mine = t.elapsed();
            let _ = other.join();
            mine
        });
    });
    drop(held);
    group.finish();
}

fn endpoint_pick(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("endpoint_pick");
    for n in [1usize, 10, 100] {
        let source = Arc::new(StaticEndpoints::default());
        let target = Target {
            namespace: "bench".into(),
            service: "hello".into(),
            port: TargetPort::Number(8080),
        };
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080)))
            .collect();
        source.set(target.clone(), EndpointSet::http1(addrs.iter().copied()));
        let endpoints = Endpoints::new(source);
        let pool = rt.block_on(endpoints.pool(&target));
        assert!(pool.pick(&[]).is_some(), "the pool knows its endpoints");
        group.bench_with_input(BenchmarkId::new("round_robin", n), &pool, |b, pool| {
            b.iter(|| black_box(pool.pick(black_box(&[]))));
        });
        if n > 1 {
            let exclude = [addrs[0]];
            group.bench_with_input(
                BenchmarkId::new("round_robin_excluding_one", n),
                &pool,
                |b, pool| b.iter(|| black_box(pool.pick(black_box(&exclude)))),
            );
        }
    }
    group.finish();
}

fn config() -> Criterion {
    // Short by default on a shared 2-core box; `cargo bench -- --measurement-time 10` for more.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

criterion_group! {
    name = micro;
    config = config();
    targets = route_lookup, route_table_rebuild, counters, endpoint_pick
}
criterion_main!(micro);
