//! Timeout scenarios (compat §11.1 `timeouts_test.go`, §11.4 `interceptor_timeouts_httpso`):
//! per-route timeouts of an InterceptorRoute end in `504 Gateway Timeout`, and requests within
//! them pass.
//!
//! - `responseHeader: 200ms`: a 5 s response is 504, a 100 ms one is 200;
//! - `request: 500ms`: a 5 s response is 504, a 100 ms one is 200;
//! - `readiness: 1ms` at zero replicas: 504 (the app cannot be ready that fast).
#![allow(clippy::unwrap_used)]

mod support;

use http::StatusCode;
use keda_http_e2e::harness::Harness;
use serde_json::json;
use support::*;

/// The hello app in `ns` with `timeouts` on its route, at `at` replicas (min `at`).
async fn app_with_timeouts(h: &Harness, ns: &str, timeouts: serde_json::Value, at: i32) -> bool {
    let host = format!("hosts={{{ns}.test}}");
    let min = format!("scaling.minReplicas={at}");
    let Some(yaml) = hello_chart("hello", ns, &[&host, &min]) else {
        return false;
    };
    let mut d = docs(&yaml);
    doc_mut(&mut d, "InterceptorRoute")["spec"]["timeouts"] = timeouts;
    namespace(h, ns).await;
    apply_docs(h, d, ns).await;
    wait_route_known(h, &format!("{ns}/hello")).await;
    wait_replicas(h, ns, "hello", at).await;
    if at > 0 {
        wait_route(h, &format!("{ns}/hello"), |r| {
            r.is_some_and(|r| {
                r["readyEndpoints"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty())
            })
        })
        .await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_timeout_is_504() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    if !app_with_timeouts(&h, "rh", json!({ "responseHeader": "200ms" }), 1).await {
        return;
    }
    let slow = get_via(&h, "rh.test", "/?delay_ms=5000").await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT, "{}", slow.text());
    let fast = get_via(&h, "rh.test", "/?delay_ms=100").await;
    assert_eq!(fast.status, StatusCode::OK, "{}", fast.text());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_is_504() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    if !app_with_timeouts(&h, "rq", json!({ "request": "500ms" }), 1).await {
        return;
    }
    let slow = get_via(&h, "rq.test", "/?delay_ms=5000").await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT, "{}", slow.text());
    let fast = get_via(&h, "rq.test", "/?delay_ms=100").await;
    assert_eq!(fast.status, StatusCode::OK, "{}", fast.text());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_timeout_is_504() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    if !app_with_timeouts(&h, "rd", json!({ "readiness": "1ms" }), 0).await {
        return;
    }
    let cold = get_via(&h, "rd.test", "/").await;
    assert_eq!(cold.status, StatusCode::GATEWAY_TIMEOUT, "{}", cold.text());
    h.stop().await;
}
