//! Scaling maths (compat §11.1 `concurrency_scaling_test.go`, `scaling_test.go`,
//! `concurrent_routing_test.go`): the interceptor counts, the scaler reports, the KEDA
//! stand-in applies the HPA formula (10 % tolerance) and writes `Deployment/scale`.
//!
//! - concurrency target 5 with 10 requests always in flight (10 closed-loop clients, 500 ms
//!   each) → exactly 2 replicas while the load lasts;
//! - requestRate target 5 (window 10 s) at 10 requests/s open loop → exactly 2 replicas;
//!   a second app with its own route stays at 0 meanwhile;
//! - when the load stops: back to 0, and still 0 several polling periods later.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keda_http_e2e::harness::Harness;
use serde_json::json;
use support::*;

/// The hello app `release` in `ns`, scaled by `metric` (max 10), waited down to 0.
async fn app(h: &Harness, ns: &str, release: &str, metric: serde_json::Value) -> bool {
    let host = format!("hosts={{{release}.{ns}.test}}");
    let Some(yaml) = hello_chart(release, ns, &[&host]) else {
        return false;
    };
    let mut d = docs(&yaml);
    doc_mut(&mut d, "InterceptorRoute")["spec"]["scalingMetric"] = metric;
    namespace(h, ns).await;
    apply_docs(h, d, ns).await;
    wait_route_known(h, &format!("{ns}/{release}")).await;
    wait_replicas(h, ns, release, 0).await;
    true
}

/// After the load: 0 replicas, and still 0 over four polling periods.
async fn back_to_zero_and_stays(h: &Harness, ns: &str, release: &str) {
    wait_replicas(h, ns, release, 0).await;
    let seen = observe_spec(h, ns, release, Duration::from_secs(4)).await;
    assert!(seen.iter().all(|&r| r == 0), "scaled again: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_target_5_with_10_in_flight_is_2_replicas() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    let metric = json!({ "concurrency": { "targetValue": 5 } });
    if !app(&h, "conc", "hello", metric).await {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let proxy = h.proxy_addr();
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let tally = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    let outcome = try_send(proxy, get("hello.conc.test", "/?delay_ms=500")).await;
                    tally.record(&outcome);
                }
                tally.failures()
            })
        })
        .collect();
    wait_spec(&h, "conc", "hello", |r| r == 2).await;
    wait_replicas(&h, "conc", "hello", 2).await;
    // With 10 in flight and 2 replicas the usage ratio is 1: nothing moves.
    let seen = observe_spec(&h, "conc", "hello", Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = 0;
    for client in clients {
        failures += client.await.unwrap();
    }
    assert!(
        seen.iter().all(|&r| r == 2),
        "replicas under load: {seen:?}"
    );
    assert_eq!(failures, 0);
    back_to_zero_and_stays(&h, "conc", "hello").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rate_target_5_at_10_rps_is_exactly_2_replicas() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    let metric =
        json!({ "requestRate": { "targetValue": 5, "window": "10s", "granularity": "1s" } });
    if !app(&h, "rate", "hello", metric.clone()).await {
        return;
    }
    // A second app with its own route, never requested: it must stay at 0.
    assert!(app(&h, "rate", "idle", metric).await);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn(open_loop(
        h.proxy_addr(),
        10.0,
        |_| get("hello.rate.test", "/"),
        async {
            let _ = done_rx.await;
        },
    ));
    wait_spec(&h, "rate", "hello", |r| r == 2).await;
    // A full rate window at 2: the HPA sees 10 / (5 × 2) = 1.
    let seen = observe_spec(&h, "rate", "hello", Duration::from_secs(10)).await;
    let idle = replicas(&h, "rate", "idle").await.0;
    done_tx.send(()).unwrap();
    let tally = load.await.unwrap();
    println!("request rate load: {}", tally.summary());
    assert!(
        seen.iter().all(|&r| r == 2),
        "replicas under load: {seen:?}"
    );
    assert_eq!(idle, 0, "the idle app was scaled");
    assert_eq!(tally.failures(), 0, "{}", tally.summary());
    back_to_zero_and_stays(&h, "rate", "hello").await;
    h.stop().await;
}
