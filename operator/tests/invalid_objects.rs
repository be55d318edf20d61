//! Objects our types or validation refuse, stored next to good ones (as a server keeps objects
//! written under an older, looser CRD): the operator reconciles the good ones after a start,
//! marks the bad ones `Ready=False` / `InvalidSpec` with an event and a metric, reconciles them
//! once fixed, and lets an invalid HTTPScaledObject holding our finalizer be deleted.

mod common;

use common::*;
use keda_http_api::http_scaled_object::HTTPSO_FINALIZER;
use keda_http_api::{HTTPScaledObject, InterceptorRoute};
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use kube_standin::LocalApiServer;
use serde_json::{Value, json};

/// Stores `body` without the checks of a write, as an older CRD let it in.
fn store_poison(server: &LocalApiServer, version: &str, kind: &str, body: Value) {
    let kind = server
        .store()
        .find_kind("http.keda.sh", version, kind)
        .expect("kind registered");
    server
        .store()
        .create(
            &kind,
            Some(NS),
            body,
            &kube_standin::write::WriteOptions::default(),
        )
        .expect("stored");
}

/// The objects of `K` read untyped (a typed read of a poison object fails to decode).
fn dynamic<K: kube::Resource<DynamicType = ()>>(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &ApiResource::erase::<K>(&()))
}

/// Waits until the object's Ready condition is `False` / `InvalidSpec` for `generation`;
/// returns its message.
async fn invalid_spec(api: &Api<DynamicObject>, name: &str, generation: i64) -> String {
    let is_invalid = move |o: Option<&DynamicObject>| {
        o.and_then(|o| o.data.pointer("/status/conditions"))
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "Ready"
                        && c["status"] == "False"
                        && c["reason"] == "InvalidSpec"
                        && c["observedGeneration"] == generation
                })
            })
    };
    let obj = within(
        "Ready=False InvalidSpec",
        await_condition(api.clone(), name, is_invalid),
    )
    .await
    .expect("watch")
    .expect("object");
    let conditions = obj.data.pointer("/status/conditions").expect("conditions");
    conditions
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .expect("message")
        .to_owned()
}

/// Warning events with reason `InvalidSpec` about `name`.
async fn invalid_spec_events(client: &Client, name: &str) -> usize {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let list = within("events", events.list(&Default::default()))
        .await
        .expect("list");
    list.items
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("InvalidSpec")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .count()
}

fn poison_route() -> Value {
    json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": {"name": "poison-route", "namespace": NS},
        "spec": {"target": {"service": "web-svc", "port": 8080},
                 "rules": [{"hosts": ["poison.example.com"]}],
                 "scalingMetric": {"concurrency": {"targetValue": 10}},
                 "timeouts": {"request": "99999999999999999999h"}}
    })
}

fn poison_httpso(name: &str, finalizers: &[&str]) -> Value {
    // A real server never stores an empty finalizer list.
    let mut metadata = json!({"name": name, "namespace": NS});
    if !finalizers.is_empty() {
        metadata["finalizers"] = json!(finalizers);
    }
    json!({
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": metadata,
        "spec": {"hosts": [format!("{name}.example.com")],
                 "scaleTargetRef": {"name": name, "service": "web-svc", "port": 8080},
                 "targetPendingRequests": "many"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_objects_are_reconciled_and_poison_ones_marked_invalid_spec() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    create(&cluster.services(), &service("web-svc")).await;
    create(&cluster.httpsos(), &httpso("good", "good.example.com")).await;
    create(
        &cluster.routes(),
        &route("good-route", "web-svc", "route.example.com", "/"),
    )
    .await;
    store_poison(
        &cluster.server,
        "v1beta1",
        "InterceptorRoute",
        poison_route(),
    );
    store_poison(
        &cluster.server,
        "v1alpha1",
        "HTTPScaledObject",
        poison_httpso("poison", &[]),
    );
    store_poison(
        &cluster.server,
        "v1alpha1",
        "HTTPScaledObject",
        poison_httpso("leaving", &[HTTPSO_FINALIZER]),
    );

    let operator = Running::start(client.clone(), config()).await;

    // The good ones are reconciled although the lists hold bad objects.
    wait_for(
        &cluster.httpsos(),
        "good",
        "good HTTPScaledObject Ready",
        httpso_ready("True", "Reconciled", 1),
    )
    .await;
    wait_for(
        &cluster.scaled_objects(),
        "good",
        "its ScaledObject",
        |so: Option<&keda_http_api::ScaledObject>| so.is_some(),
    )
    .await;
    wait_for(
        &cluster.routes(),
        "good-route",
        "good InterceptorRoute Ready",
        route_ready("True", "Reconciled", 1),
    )
    .await;

    // The bad ones say why, in one sentence, with an event each.
    let httpsos = dynamic::<HTTPScaledObject>(&client);
    let routes = dynamic::<InterceptorRoute>(&client);
    let message = invalid_spec(&httpsos, "poison", 1).await;
    assert!(
        message.starts_with("The object is ignored until it is fixed, because spec.targetPendingRequests: invalid type"),
        "{message}"
    );
    let message = invalid_spec(&routes, "poison-route", 1).await;
    assert!(
        message.contains("spec.timeouts.request") && message.contains("99999999999999999999h"),
        "{message}"
    );
    assert!(!message.contains('{'), "no body dump: {message}");
    assert_eq!(invalid_spec_events(&client, "poison").await, 1);
    assert_eq!(invalid_spec_events(&client, "poison-route").await, 1);
    assert!(
        within("get", cluster.scaled_objects().get_opt("poison"))
            .await
            .expect("get")
            .is_none(),
        "no ScaledObject for an invalid HTTPScaledObject"
    );
    let invalid = operator.metrics.invalid_objects();
    assert!(invalid.get("HTTPScaledObject") >= 2);
    assert_eq!(invalid.get("InterceptorRoute"), 1);

    // Fixed: reconciled as any object, with the new generation.
    within(
        "fix",
        httpsos.patch(
            "poison",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"targetPendingRequests": 100}})),
        ),
    )
    .await
    .expect("fix");
    wait_for(
        &cluster.httpsos(),
        "poison",
        "fixed HTTPScaledObject Ready",
        httpso_ready("True", "Reconciled", 2),
    )
    .await;

    // An invalid object holding our finalizer can still be deleted.
    within(
        "delete",
        httpsos.delete("leaving", &DeleteParams::default()),
    )
    .await
    .expect("delete");
    within(
        "the invalid object to be gone",
        await_condition(httpsos.clone(), "leaving", |o: Option<&DynamicObject>| {
            o.is_none()
        }),
    )
    .await
    .expect("watch");

    operator.stop().await.expect("clean stop");
}
