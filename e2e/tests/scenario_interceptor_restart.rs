//! Interceptor restart under load (compat §11.1 `graceful_shutdown_test.go`): two
//! interceptor processes behind the proxy address (the harness's forwarder plays the proxy
//! Service), the scaler polling both through their admin EndpointSlices (asserted on its
//! `scaler_pinger_endpoints` metric).
//!
//! - a 10 s request is in flight on interceptor 0;
//! - open-loop load (20 requests/s) runs through the proxy address the whole time;
//! - interceptor 0 is taken out of rotation and gets `SIGTERM` (as a deleted pod); it drains
//!   the 10 s request, which answers 200, and exits 0;
//! - the harness starts it again; it learns its routes and answers;
//! - 0 failed requests in the load.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use support::*;

/// `/queue` concurrency of route `key` on interceptor `index`.
async fn concurrency(h: &keda_http_e2e::harness::Harness, index: usize, key: &str) -> i64 {
    let admin = SocketAddr::from(([127, 0, 0, 1], h.interceptor_ports()[index].admin));
    let reply = send(admin, get("127.0.0.1", "/queue")).await;
    let counts: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    counts[key]["Concurrency"].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_survives_an_interceptor_restart() {
    let Some(mut h) = start(|c| {
        c.interceptors = 2;
        c.component_env
            .push(("KEDA_HTTP_DRAIN_TIMEOUT".into(), "30s".into()));
        c.grace = Duration::from_secs(40);
    })
    .await
    else {
        return;
    };
    let sets = ["hosts={restart.test}", "scaling.minReplicas=1"];
    let Some(yaml) = hello_chart("hello", "restart", &sets) else {
        return;
    };
    namespace(&h, "restart").await;
    apply_docs(&h, docs(&yaml), "restart").await;
    wait_replicas(&h, "restart", "hello", 1).await;
    wait_route(&h, "restart/hello", |r| {
        r.is_some_and(|r| {
            r["readyEndpoints"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
    })
    .await;

    // The scaler polls both interceptors (one admin EndpointSlice each).
    let metrics = SocketAddr::from(([127, 0, 0, 1], h.ports().scaler_metrics));
    within("the scaler to see both interceptors", async {
        loop {
            let reply = send(metrics, get("127.0.0.1", "/metrics")).await;
            if reply
                .text()
                .lines()
                .any(|l| l == "scaler_pinger_endpoints 2")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // The long request, on interceptor 0.
    let first = SocketAddr::from(([127, 0, 0, 1], h.interceptor_ports()[0].proxy));
    let long = tokio::spawn(try_send(first, get("restart.test", "/?delay_ms=10000")));
    within("the long request on interceptor 0", async {
        while concurrency(&h, 0, "restart/hello").await < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Load through the proxy address until told to stop.
    let (stop_load, load_stopped) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn(open_loop(
        h.proxy_addr(),
        20.0,
        |_| get("restart.test", "/"),
        async {
            let _ = load_stopped.await;
        },
    ));

    let status = within("interceptor 0 to drain and exit", h.stop_interceptor(0))
        .await
        .unwrap();
    assert_eq!(status, "exit status: 0");
    let long = long.await.unwrap().unwrap();
    assert_eq!(long.status, StatusCode::OK, "{}", long.text());

    h.start_interceptor(0).await.unwrap();
    wait_route(&h, "restart/hello", |r| {
        r.is_some_and(|r| {
            r["readyEndpoints"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
    })
    .await;
    for _ in 0..5 {
        let reply = send(first, get("restart.test", "/")).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    stop_load.send(()).unwrap();
    let tally = load.await.unwrap();
    println!("load during the restart: {}", tally.summary());
    assert_eq!(tally.failures(), 0, "{}", tally.summary());
    assert!(tally.ok.load(std::sync::atomic::Ordering::Relaxed) > 0);
    h.stop().await;
}
