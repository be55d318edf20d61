//! Cold start scenarios (compat §11.1 `cold_start_test.go`, `placeholder_test.go`,
//! `static_route_test.go`, `websocket_test.go`): the app at zero replicas behind the real
//! interceptor, scaler and operator, with the hello chart's manifests (`helm template`).
//!
//! - a first GET and a POST with a JSON body both answer 200; the Deployment goes 0 → 1 and,
//!   after the cooldown, back to 0;
//! - a WebSocket handshake through a cold start, then a message echoed;
//! - a placeholder answers while the app is cold, the real response once it is ready;
//! - a fallback Service answers when the app cannot become ready (no ScaledObject, readiness
//!   timeout 1 s);
//! - a static route answers at zero without waking the app, and is the app's own once it is
//!   up.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::StatusCode;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Renders hello release `release` into `ns` with `sets`, lets `edit` change the documents,
/// applies them and waits until the interceptor knows the route and the app is at `at`.
async fn deploy(
    h: &keda_http_e2e::harness::Harness,
    ns: &str,
    release: &str,
    sets: &[&str],
    edit: impl FnOnce(&mut Vec<serde_json::Value>),
    at: i32,
) -> bool {
    let Some(yaml) = hello_chart(release, ns, sets) else {
        return false;
    };
    let mut d = docs(&yaml);
    edit(&mut d);
    namespace(h, ns).await;
    apply_docs(h, d, ns).await;
    wait_route_known(h, &format!("{ns}/{release}")).await;
    wait_replicas(h, ns, release, at).await;
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_json_scale_from_zero_and_back() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    if !deploy(&h, "cold", "hello", &["hosts={cold.test}"], |_| {}, 0).await {
        return;
    }
    let reply = get_via(&h, "cold.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(replicas(&h, "cold", "hello").await.0, 1);

    let body = json!({ "greeting": "hello", "n": [1, 2, 3] });
    let reply = send(h.proxy_addr(), json_post("cold.test", "/echo", &body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&reply.body).unwrap(),
        body
    );
    // Back to zero after the cooldown (2 s), with nothing in flight.
    wait_replicas(&h, "cold", "hello", 0).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_through_a_cold_start() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    let sets = ["hosts={ws.test}", "image.repository=e2e-echo"];
    if !deploy(&h, "ws", "echo", &sets, |_| {}, 0).await {
        return;
    }
    let stream = tokio::net::TcpStream::connect(h.proxy_addr())
        .await
        .unwrap();
    let request = "ws://ws.test/ws".into_client_request().unwrap();
    let (mut ws, response) = within(
        "the WebSocket handshake",
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(replicas(&h, "ws", "echo").await.0, 1);
    for text in ["first", "second"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = within("the echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    ws.close(None).await.unwrap();
    drop(ws);
    wait_replicas(&h, "ws", "echo", 0).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_while_cold_then_the_real_response() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    let placeholder = |d: &mut Vec<serde_json::Value>| {
        doc_mut(d, "InterceptorRoute")["spec"]["coldStart"] = json!({
            "placeholder": { "response": {
                "statusCode": 503,
                "body": "{\"status\":\"loading\"}",
                "headers": { "Content-Type": "application/json" },
            }},
        });
    };
    if !deploy(&h, "ph", "hello", &["hosts={ph.test}"], placeholder, 0).await {
        return;
    }
    let reply = get_via(&h, "ph.test", "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.text(), "{\"status\":\"loading\"}");
    assert_eq!(reply.headers["content-type"], "application/json");
    // The placeholder request woke the app; once it is ready the app answers.
    wait_replicas(&h, "ph", "hello", 1).await;
    wait_route(&h, "ph/hello", |r| {
        r.is_some_and(|r| {
            r["readyEndpoints"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
    })
    .await;
    let reply = get_via(&h, "ph.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_answers_while_the_app_cannot_start() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    // The fallback: the echo backend, always one replica.
    let fallback_sets = [
        "hosts={fallback-direct.test}",
        "image.repository=e2e-echo",
        "scaling.minReplicas=1",
    ];
    if !deploy(&h, "fb", "backup", &fallback_sets, |_| {}, 1).await {
        return;
    }
    // The app: no ScaledObject, so nothing scales it up; readiness timeout 1 s.
    let app = |d: &mut Vec<serde_json::Value>| {
        drop_kind(d, "ScaledObject");
        doc_mut(d, "Deployment")["spec"]["replicas"] = json!(0);
        let ir = doc_mut(d, "InterceptorRoute");
        ir["spec"]["coldStart"] = json!({
            "fallback": { "service": { "name": "backup", "port": 8080 } },
        });
        ir["spec"]["timeouts"] = json!({ "readiness": "1s" });
    };
    assert!(deploy(&h, "fb", "hello", &["hosts={app.fb.test}"], app, 0).await);
    let reply = get_via(&h, "app.fb.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        reply.text().starts_with("echo "),
        "not the fallback: {}",
        reply.text()
    );
    assert_eq!(replicas(&h, "fb", "hello").await.0, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_route_answers_at_zero_without_waking_the_app() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    let statics = |d: &mut Vec<serde_json::Value>| {
        doc_mut(d, "InterceptorRoute")["spec"]["staticRoutes"] = json!([{
            "rules": [{ "paths": [{ "value": "/healthz" }] }],
            "response": {
                "statusCode": 200,
                "body": "healthy",
                "headers": { "X-Static": "true" },
            },
        }]);
    };
    if !deploy(&h, "st", "hello", &["hosts={static.test}"], statics, 0).await {
        return;
    }
    for _ in 0..5 {
        let reply = get_via(&h, "static.test", "/healthz").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "healthy");
        assert_eq!(reply.headers["x-static"], "true");
    }
    // Several polling periods (1 s) and HPA syncs later, still nobody woke the app.
    let seen = observe_spec(&h, "st", "hello", Duration::from_secs(4)).await;
    assert!(seen.iter().all(|&r| r == 0), "the app was scaled: {seen:?}");
    // Once the app is up (woken by another path), `/healthz` is the app's own
    // (`responseMode` defaults to WhenUnavailable).
    let reply = get_via(&h, "static.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = get_via(&h, "static.test", "/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "ok");
    assert!(!reply.headers.contains_key("x-static"));
    h.stop().await;
}
