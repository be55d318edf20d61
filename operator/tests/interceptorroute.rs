//! InterceptorRoute status against the local API server: Ready=True with observedGeneration,
//! Ready=False while the target Service is missing, and Ready=False on both sides of a
//! host + path + headers conflict with another InterceptorRoute or an HTTPScaledObject.

mod common;

use common::*;
use keda_http_api::InterceptorRoute;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

fn message(r: &InterceptorRoute) -> String {
    r.status
        .as_ref()
        .and_then(|s| ready(&s.conditions))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_presence_and_route_conflicts() {
    let cluster = Cluster::start().await;
    let mut cfg = config();
    cfg.metrics_addr = Some("127.0.0.1:0".parse().expect("addr"));
    let operator = Running::start(cluster.client.clone(), cfg).await;
    let routes = cluster.routes();
    let services = cluster.services();

    // Missing Service → Ready=False; the Service appears → Ready=True.
    create(&routes, &route("shop", "shop-svc", "shop.example.com", "/")).await;
    let r = wait_for(
        &routes,
        "shop",
        "ServiceNotFound",
        route_ready("False", "ServiceNotFound", 1),
    )
    .await
    .expect("route");
    assert_eq!(message(&r), "target Service apps/shop-svc does not exist");
    create(&services, &service("shop-svc")).await;
    let r = wait_for(
        &routes,
        "shop",
        "Reconciled",
        route_ready("True", "Reconciled", 1),
    )
    .await
    .expect("route");
    assert_eq!(message(&r), "InterceptorRoute reconciled");

    // A second route claiming the same key (host and path normalised): both Ready=False,
    // naming both.
    create(&services, &service("shop2-svc")).await;
    create(
        &routes,
        &route("shop-copy", "shop2-svc", "Shop.example.com:80", "//"),
    )
    .await;
    let copy = wait_for(
        &routes,
        "shop-copy",
        "conflict on the newcomer",
        route_ready("False", "RouteConflict", 1),
    )
    .await
    .expect("route");
    let first = wait_for(
        &routes,
        "shop",
        "conflict on the first route",
        route_ready("False", "RouteConflict", 1),
    )
    .await
    .expect("route");
    for (r, msg) in [(&copy, message(&copy)), (&first, message(&first))] {
        assert!(
            msg.contains("InterceptorRoute apps/shop ")
                || msg.contains("InterceptorRoute apps/shop,"),
            "{:?}: {msg}",
            r.metadata.name
        );
        assert!(msg.contains("InterceptorRoute apps/shop-copy"), "{msg}");
        assert!(
            msg.contains("host \"shop.example.com\", path \"/\""),
            "{msg}"
        );
    }

    // Move the copy to another path: both recover, with the copy's new generation.
    within(
        "patch",
        routes.patch(
            "shop-copy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rules": [{"hosts": ["shop.example.com"], "paths": [{"value": "/v2"}]}]}})),
        ),
    )
    .await
    .expect("patch");
    wait_for(
        &routes,
        "shop-copy",
        "copy recovers",
        route_ready("True", "Reconciled", 2),
    )
    .await;
    wait_for(
        &routes,
        "shop",
        "first recovers",
        route_ready("True", "Reconciled", 1),
    )
    .await;

    // An HTTPScaledObject on the same key conflicts too, and its deletion clears it.
    create(
        &cluster.httpsos(),
        &httpso("legacy-shop", "shop.example.com"),
    )
    .await;
    let r = wait_for(
        &routes,
        "shop",
        "conflict with an HTTPScaledObject",
        route_ready("False", "RouteConflict", 1),
    )
    .await
    .expect("route");
    assert!(
        message(&r).contains("HTTPScaledObject apps/legacy-shop"),
        "{}",
        message(&r)
    );
    within(
        "delete",
        cluster
            .httpsos()
            .delete("legacy-shop", &DeleteParams::default()),
    )
    .await
    .expect("delete");
    wait_for(
        &routes,
        "shop",
        "conflict cleared",
        route_ready("True", "Reconciled", 1),
    )
    .await;

    // The Service goes away → Ready=False again.
    within(
        "delete",
        services.delete("shop-svc", &DeleteParams::default()),
    )
    .await
    .expect("delete");
    wait_for(
        &routes,
        "shop",
        "Service removed",
        route_ready("False", "ServiceNotFound", 1),
    )
    .await;

    // Every reconcile above is counted under controller-runtime's metric names.
    let (code, text) = http_get(operator.metrics_addr.expect("metrics"), "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        text.contains(
            "controller_runtime_reconcile_total{controller=\"interceptorroute\",result=\"success\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("controller_runtime_reconcile_time_seconds_bucket"),
        "{text}"
    );
    // The process collector, as the Go binaries export it.
    for series in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    ] {
        assert!(text.contains(&format!("\n{series} ")), "{series}: {text}");
    }
    assert!(operator.metrics.reconcile_count("interceptorroute") >= 8);

    operator.stop().await.expect("clean stop");
}
