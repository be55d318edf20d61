//! The activation path (compat §6): the first request at zero makes the interceptor's
//! `/queue/watch` push the route active, the scaler's `StreamIsActive` tells KEDA, and KEDA
//! scales 0 → 1 at once, without waiting for a poll.
//!
//! The ScaledObject's `pollingInterval` is one hour and the HPA sync period of the KEDA
//! stand-in too; the stand-in polls once when it starts its loop (before the request, when
//! nothing is active) and then not again within the test. So only the push stream can explain
//! the scale-up. The test asserts the order of events on one sequence counter:
//! request sent → Deployment `spec.replicas` 1 (seen by a watch) → response 200, and the
//! ScaledObject turning Active=True after the request was sent.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use http::StatusCode;
use k8s_openapi::api::apps::v1::Deployment;
use keda_http_api::scaled_object::ScaledObject;
use kube::Api;
use kube::runtime::watcher;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_request_scales_up_through_the_push_stream() {
    let hour = Duration::from_secs(3600);
    let Some(h) = start(|c| {
        c.keda.polling_interval = None;
        c.keda.hpa_sync_period = hour;
    })
    .await
    else {
        return;
    };
    let sets = ["hosts={act.test}", "scaling.pollingInterval=3600"];
    let Some(yaml) = hello_chart("hello", "act", &sets) else {
        return;
    };
    let mut d = docs(&yaml);
    // Created at zero: with hour-long polls KEDA would not take it down in time.
    doc_mut(&mut d, "Deployment")["spec"]["replicas"] = json!(0);
    namespace(&h, "act").await;
    apply_docs(&h, d, "act").await;
    wait_route_known(&h, "act/hello").await;
    wait_replicas(&h, "act", "hello", 0).await;
    // The stand-in's loop has started (it reported the ScaledObject Ready after its first
    // poll, with nothing active).
    let scaled_objects: Api<ScaledObject> = Api::namespaced(h.client(), "act");
    let condition = |so: &ScaledObject, t: &str| {
        so.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
            .map(|c| c.status.clone())
    };
    within("the first poll's report", async {
        loop {
            let so = scaled_objects.get("hello").await.unwrap();
            if condition(&so, "Ready").as_deref() == Some("True") {
                assert_eq!(condition(&so, "Active").as_deref(), Some("False"));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    let seq = Arc::new(AtomicU64::new(0));
    let next = |seq: &AtomicU64| seq.fetch_add(1, Ordering::SeqCst);
    // Watch the Deployment and the ScaledObject; note when each turns.
    let scaled_up = Arc::new(AtomicU64::new(u64::MAX));
    let activated = Arc::new(AtomicU64::new(u64::MAX));
    let deployments: Api<Deployment> = Api::namespaced(h.client(), "act");
    let (listed_d, deployment_listed) = tokio::sync::oneshot::channel();
    let (listed_so, scaled_object_listed) = tokio::sync::oneshot::channel();
    let watch_deployment = {
        let (seq, scaled_up) = (seq.clone(), scaled_up.clone());
        let mut listed = Some(listed_d);
        tokio::spawn(async move {
            let mut events = watcher::watcher(deployments, watcher::Config::default()).boxed();
            while let Some(Ok(event)) = events.next().await {
                if let watcher::Event::InitDone = event
                    && let Some(listed) = listed.take()
                {
                    let _ = listed.send(());
                }
                if let watcher::Event::Apply(d) | watcher::Event::InitApply(d) = event
                    && d.spec.replicas.unwrap_or(1) >= 1
                {
                    scaled_up.store(next(&seq), Ordering::SeqCst);
                    return;
                }
            }
        })
    };
    let watch_scaled_object = {
        let (seq, activated) = (seq.clone(), activated.clone());
        let api = scaled_objects.clone();
        let mut listed = Some(listed_so);
        tokio::spawn(async move {
            let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(Ok(event)) = events.next().await {
                if let watcher::Event::InitDone = event
                    && let Some(listed) = listed.take()
                {
                    let _ = listed.send(());
                }
                if let watcher::Event::Apply(so) | watcher::Event::InitApply(so) = event
                    && condition(&so, "Active").as_deref() == Some("True")
                {
                    activated.store(next(&seq), Ordering::SeqCst);
                    return;
                }
            }
        })
    };
    // Both watches have listed (at zero, inactive) before the request.
    within("the Deployment watch's list", deployment_listed)
        .await
        .unwrap();
    within("the ScaledObject watch's list", scaled_object_listed)
        .await
        .unwrap();
    assert_eq!(seq.load(Ordering::SeqCst), 0, "turned before the request");

    let sent = next(&seq);
    let reply = get_via(&h, "act.test", "/").await;
    let answered = next(&seq);
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    within("the Deployment watch", watch_deployment)
        .await
        .unwrap();
    within("the ScaledObject watch", watch_scaled_object)
        .await
        .unwrap();
    let (scaled_up, activated) = (
        scaled_up.load(Ordering::SeqCst),
        activated.load(Ordering::SeqCst),
    );
    assert!(
        sent < scaled_up && scaled_up < answered,
        "order: sent {sent}, scaled up {scaled_up}, answered {answered}"
    );
    // KEDA writes Active after scaling, so only "after the request" is certain here.
    assert!(
        sent < activated,
        "order: sent {sent}, Active=True {activated}"
    );
    h.stop().await;
}
