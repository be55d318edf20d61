//! Routing scenarios (compat §11.1 `host_routing_test.go`, `path_routing_test.go`,
//! `header_routing_test.go`, `multi_route_test.go`, `combined_routing_test.go`,
//! `route_update_test.go`, `route_deletion_test.go`, `port_name_test.go`): two echo backends
//! (`a`, `b`, one replica each, rendered by the hello chart) and InterceptorRoutes choosing
//! between them. "Rejected" is 404 from the interceptor.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, StatusCode};
use keda_http_e2e::harness::Harness;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::*;

const NS: &str = "routing";

/// Echo backends `names` in [`NS`], one replica each, no route of their own.
async fn backends(h: &Harness, names: &[&str]) -> bool {
    namespace(h, NS).await;
    for name in names {
        let Some(yaml) = hello_chart(name, NS, &["image.repository=e2e-echo"]) else {
            return false;
        };
        let mut d = docs(&yaml);
        drop_kind(&mut d, "InterceptorRoute");
        drop_kind(&mut d, "ScaledObject");
        doc_mut(&mut d, "Deployment")["spec"]["replicas"] = json!(1);
        add_env(&mut d, "ECHO_NAME", name);
        apply_docs(h, d, NS).await;
    }
    for name in names {
        wait_replicas(h, NS, name, 1).await;
    }
    true
}

/// An InterceptorRoute `name` → Service `target` (by port name) with `rules`.
async fn route(h: &Harness, name: &str, target: &str, rules: Value) {
    let ir = json!({
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "InterceptorRoute",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "target": { "service": target, "portName": "http" },
            "rules": rules,
            "scalingMetric": { "concurrency": { "targetValue": 100 } },
        },
    });
    apply_docs(h, vec![ir], NS).await;
    let key = format!("{NS}/{name}");
    let target = target.to_owned();
    wait_route(h, &key, move |r| {
        r.is_some_and(|r| {
            r["target"].as_str().is_some_and(|t| t.contains(&target))
                && r["readyEndpoints"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty())
        })
    })
    .await;
}

/// `GET http://host/path` with `headers`: `Some(backend)` for a 200 from it, `None` for a 404.
async fn hit(h: &Harness, host: &str, path: &str, headers: &[(&str, &str)]) -> Option<String> {
    let mut req = Request::get(path).header(http::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let reply = send(h.proxy_addr(), req.body(Default::default()).unwrap()).await;
    match reply.status {
        StatusCode::OK => Some(reply.text().trim_start_matches("echo ").to_owned()),
        StatusCode::NOT_FOUND => None,
        other => panic!(
            "{host}{path} {headers:?}: unexpected {other}: {}",
            reply.text()
        ),
    }
}

fn a() -> Option<String> {
    Some("a".to_owned())
}

fn b() -> Option<String> {
    Some("b".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_wildcards_paths_headers_and_rules() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    if !backends(&h, &["a", "b"]).await {
        return;
    }
    // Host: several hosts on one route; unknown host rejected.
    route(
        &h,
        "hosts",
        "a",
        json!([{ "hosts": ["h1.test", "h2.test"] }]),
    )
    .await;
    assert_eq!(hit(&h, "h1.test", "/", &[]).await, a());
    assert_eq!(hit(&h, "h2.test:8080", "/", &[]).await, a());
    assert_eq!(hit(&h, "unknown.test", "/", &[]).await, None);

    // Wildcard: the exact host beats `*.`; other subdomains take the wildcard.
    route(&h, "exact", "a", json!([{ "hosts": ["x.wild.test"] }])).await;
    route(&h, "wild", "b", json!([{ "hosts": ["*.wild.test"] }])).await;
    assert_eq!(hit(&h, "x.wild.test", "/", &[]).await, a());
    assert_eq!(hit(&h, "y.wild.test", "/", &[]).await, b());
    assert_eq!(hit(&h, "wild.other", "/", &[]).await, None);

    // Two apps on one host by path prefix; another path rejected.
    route(
        &h,
        "svc-a",
        "a",
        json!([{ "hosts": ["paths.test"], "paths": [{ "value": "/svc-a" }] }]),
    )
    .await;
    route(
        &h,
        "svc-b",
        "b",
        json!([{ "hosts": ["paths.test"], "paths": [{ "value": "/svc-b" }] }]),
    )
    .await;
    assert_eq!(hit(&h, "paths.test", "/svc-a/x", &[]).await, a());
    assert_eq!(hit(&h, "paths.test", "/svc-b", &[]).await, b());
    assert_eq!(hit(&h, "paths.test", "/other", &[]).await, None);

    // Header value: X-Route foo → a, bar → b, missing → rejected.
    let by_header = |v: &str| json!([{ "hosts": ["hdr.test"], "headers": [{ "name": "X-Route", "value": v }] }]);
    route(&h, "foo", "a", by_header("foo")).await;
    route(&h, "bar", "b", by_header("bar")).await;
    assert_eq!(hit(&h, "hdr.test", "/", &[("x-route", "foo")]).await, a());
    assert_eq!(hit(&h, "hdr.test", "/", &[("X-Route", "bar")]).await, b());
    assert_eq!(hit(&h, "hdr.test", "/", &[]).await, None);

    // Header presence: the exact value wins, any other value takes the presence-only route.
    route(&h, "verbose", "a", json!([{ "hosts": ["debug.test"], "headers": [{ "name": "X-Debug", "value": "verbose" }] }])).await;
    route(
        &h,
        "present",
        "b",
        json!([{ "hosts": ["debug.test"], "headers": [{ "name": "X-Debug" }] }]),
    )
    .await;
    assert_eq!(
        hit(&h, "debug.test", "/", &[("x-debug", "verbose")]).await,
        a()
    );
    assert_eq!(
        hit(&h, "debug.test", "/", &[("x-debug", "other")]).await,
        b()
    );

    // Multi-rule: a host-only rule and a host + path rule on one route.
    route(
        &h,
        "multi",
        "a",
        json!([
            { "hosts": ["host-only.test"] },
            { "hosts": ["with-path.test"], "paths": [{ "value": "/svc" }] },
        ]),
    )
    .await;
    assert_eq!(hit(&h, "host-only.test", "/anything", &[]).await, a());
    assert_eq!(hit(&h, "with-path.test", "/svc", &[]).await, a());
    assert_eq!(hit(&h, "with-path.test", "/other", &[]).await, None);
    assert_eq!(hit(&h, "nothing.test", "/svc", &[]).await, None);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_reroutes_and_delete_rejects_while_the_other_route_works() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    if !backends(&h, &["a", "b"]).await {
        return;
    }
    route(&h, "moving", "a", json!([{ "hosts": ["moving.test"] }])).await;
    route(&h, "staying", "b", json!([{ "hosts": ["staying.test"] }])).await;
    assert_eq!(hit(&h, "moving.test", "/", &[]).await, a());

    // Update of the target: app-a → app-b.
    route(&h, "moving", "b", json!([{ "hosts": ["moving.test"] }])).await;
    assert_eq!(hit(&h, "moving.test", "/", &[]).await, b());

    // Delete: its host is rejected, the other route keeps working.
    let gvk = GroupVersionKind::gvk("http.keda.sh", "v1beta1", "InterceptorRoute");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "interceptorroutes");
    let api: Api<DynamicObject> = Api::namespaced_with(h.client(), NS, &resource);
    api.delete("moving", &DeleteParams::default())
        .await
        .unwrap();
    wait_route(&h, &format!("{NS}/moving"), |r| r.is_none()).await;
    assert_eq!(hit(&h, "moving.test", "/", &[]).await, None);
    assert_eq!(hit(&h, "staying.test", "/", &[]).await, b());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interceptor_route_and_http_scaled_object_side_by_side() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    if !backends(&h, &["a", "b"]).await {
        return;
    }
    route(&h, "new-api", "a", json!([{ "hosts": ["ir.test"] }])).await;
    let httpso = json!({
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": { "name": "old-api", "namespace": NS },
        "spec": {
            "hosts": ["httpso.test"],
            "scaleTargetRef": {
                "name": "b", "kind": "Deployment", "apiVersion": "apps/v1",
                "service": "b", "portName": "http",
            },
            "replicas": { "min": 1, "max": 1 },
            "scalingMetric": { "concurrency": { "targetValue": 100 } },
        },
    });
    apply_docs(&h, vec![httpso], NS).await;
    wait_route(&h, &format!("{NS}/old-api"), |r| {
        r.is_some_and(|r| {
            r["readyEndpoints"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
    })
    .await;
    assert_eq!(hit(&h, "ir.test", "/", &[]).await, a());
    assert_eq!(hit(&h, "httpso.test", "/", &[]).await, b());
    assert_eq!(hit(&h, "neither.test", "/", &[]).await, None);
    h.stop().await;
}
