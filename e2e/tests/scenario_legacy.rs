//! The legacy path (compat §11.4 `internal_service_httpso`, `interceptor_scaledobject_httpso`):
//! the hello chart in `mode=httpScaledObject` renders an HTTPScaledObject; the operator turns
//! it into a ScaledObject; the KEDA stand-in marks that Ready and scales the app with the
//! scaler in HTTPScaledObject mode.
//!
//! - the operator's ScaledObject exists and becomes Ready=True;
//! - a first request at zero answers 200 (0 → 1);
//! - 10 requests in flight with target concurrency 5 → 2 replicas;
//! - load stops → back to 0.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use keda_http_api::scaled_object::ScaledObject;
use kube::Api;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_scaled_object_scales_through_the_operator() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    let sets = [
        "mode=httpScaledObject",
        "hosts={legacy.test}",
        "scaling.targetConcurrency=5",
    ];
    let Some(yaml) = hello_chart("hello", "legacy", &sets) else {
        return;
    };
    let d = docs(&yaml);
    assert!(d.iter().any(|d| d["kind"] == "HTTPScaledObject"));
    assert!(!d.iter().any(|d| d["kind"] == "ScaledObject"));
    namespace(&h, "legacy").await;
    apply_docs(&h, d, "legacy").await;

    // The operator's ScaledObject, made Ready by KEDA.
    let scaled_objects: Api<ScaledObject> = Api::namespaced(h.client(), "legacy");
    within("the operator's ScaledObject to be Ready", async {
        loop {
            if let Ok(so) = scaled_objects.get("hello").await {
                let ready = so.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                if ready {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    wait_route_known(&h, "legacy/hello").await;
    wait_replicas(&h, "legacy", "hello", 0).await;

    let reply = get_via(&h, "legacy.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(replicas(&h, "legacy", "hello").await.0 >= 1);

    let stop = Arc::new(AtomicBool::new(false));
    let proxy = h.proxy_addr();
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let tally = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    let outcome = try_send(proxy, get("legacy.test", "/?delay_ms=500")).await;
                    tally.record(&outcome);
                }
                tally.failures()
            })
        })
        .collect();
    wait_spec(&h, "legacy", "hello", |r| r == 2).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = 0;
    for client in clients {
        failures += client.await.unwrap();
    }
    assert_eq!(failures, 0);
    wait_replicas(&h, "legacy", "hello", 0).await;
    h.stop().await;
}
