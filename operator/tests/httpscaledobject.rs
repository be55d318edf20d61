//! HTTPScaledObject → ScaledObject against the local API server, with the operator running
//! in-process: creation per compat §9, updates, revert of hand edits, deletion with the
//! finalizer, the skip and orphan annotations, and status after each step.

mod common;

use common::*;
use keda_http_api::http_scaled_object::{
    HTTPSO_FINALIZER, HttpRequestRateMetric, ORPHAN_SCALEDOBJECT_ANNOTATION,
    SKIP_SCALEDOBJECT_CREATION_ANNOTATION,
};
use keda_http_api::{HTTPScaledObject, ScaledObject};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

fn merge(value: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(value)
}

async fn patch_httpso(
    api: &Api<HTTPScaledObject>,
    name: &str,
    value: serde_json::Value,
) -> HTTPScaledObject {
    within(
        "patch",
        api.patch(name, &PatchParams::default(), &merge(value)),
    )
    .await
    .expect("patch succeeds")
}

fn so_has(
    pred: impl Fn(&ScaledObject) -> bool,
) -> impl kube::runtime::wait::Condition<ScaledObject> {
    move |so: Option<&ScaledObject>| so.is_some_and(&pred)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_create_update_revert_delete() {
    let cluster = Cluster::start().await;
    let operator = Running::start(cluster.client.clone(), config()).await;
    let httpsos = cluster.httpsos();
    let sos = cluster.scaled_objects();

    // Create: the ScaledObject matches compat §9 field by field.
    let created = create(&httpsos, &httpso("web", "web.example.com")).await;
    let uid = created.uid().expect("uid");
    let so = wait_for(&sos, "web", "ScaledObject created", so_has(|_| true))
        .await
        .expect("so");
    let so_json = serde_json::to_value(&so).expect("json");
    assert_eq!(so_json["apiVersion"], "keda.sh/v1alpha1");
    assert_eq!(so_json["kind"], "ScaledObject");
    assert_eq!(so_json["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(so_json["metadata"]["annotations"], json!({"team": "web"}));
    assert_eq!(
        so_json["metadata"]["ownerReferences"],
        json!([{
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "name": "web",
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true
        }])
    );
    assert_eq!(
        so_json["spec"],
        json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "pollingInterval": 15,
            "cooldownPeriod": 120,
            "initialCooldownPeriod": 30,
            "minReplicaCount": 0,
            "maxReplicaCount": 10,
            "advanced": {"restoreToOriginalReplicaCount": true},
            "triggers": [{
                "type": "external-push",
                "metadata": {
                    "scalerAddress": "keda-add-ons-http-external-scaler.keda:9090",
                    "httpScaledObject": "web"
                }
            }]
        })
    );
    let h = wait_for(
        &httpsos,
        "web",
        "Ready=True gen 1",
        httpso_ready("True", "Reconciled", 1),
    )
    .await
    .expect("httpso");
    let status = h.status.as_ref().expect("status");
    assert_eq!(
        status.target_workload.as_deref(),
        Some("apps/v1/Deployment/web")
    );
    assert_eq!(status.target_service.as_deref(), Some("web-svc:8080"));
    let c = ready(&status.conditions).expect("Ready");
    assert_eq!(c.message, "ScaledObject created and configured");
    assert!(
        h.finalizers().iter().any(|f| f == HTTPSO_FINALIZER),
        "finalizer added"
    );

    // Update min/max/cooldown and the target: the ScaledObject follows.
    patch_httpso(
        &httpsos,
        "web",
        json!({"spec": {
            "replicas": {"min": 2, "max": 20},
            "scaledownPeriod": 60,
            "scaleTargetRef": {"name": "web-v2", "service": "web-svc", "portName": "http", "port": null}
        }}),
    )
    .await;
    wait_for(
        &sos,
        "web",
        "ScaledObject follows the update",
        so_has(|so| {
            so.spec.min_replica_count == Some(2)
                && so.spec.max_replica_count == Some(20)
                && so.spec.cooldown_period == Some(60)
                && so.spec.scale_target_ref.name == "web-v2"
        }),
    )
    .await;
    let h = wait_for(
        &httpsos,
        "web",
        "Ready=True gen 2",
        httpso_ready("True", "Reconciled", 2),
    )
    .await
    .expect("httpso");
    let status = h.status.as_ref().expect("status");
    assert_eq!(
        status.target_workload.as_deref(),
        Some("apps/v1/Deployment/web-v2")
    );
    assert_eq!(
        status.target_service.as_deref(),
        Some("web-svc:0"),
        "port 0 with portName"
    );

    // Edit the ScaledObject by hand: reverted.
    within(
        "hand edit",
        sos.patch(
            "web",
            &PatchParams::default(),
            &merge(json!({"spec": {"maxReplicaCount": 99, "pollingInterval": 1}})),
        ),
    )
    .await
    .expect("hand edit accepted");
    wait_for(
        &sos,
        "web",
        "hand edit reverted",
        so_has(|so| so.spec.max_replica_count == Some(20) && so.spec.polling_interval == Some(15)),
    )
    .await;

    // Delete: the finalizer runs, the ScaledObject goes, the HTTPScaledObject goes.
    within("delete", httpsos.delete("web", &DeleteParams::default()))
        .await
        .expect("delete accepted");
    wait_for(&httpsos, "web", "HTTPScaledObject removed", absent()).await;
    wait_for(&sos, "web", "ScaledObject garbage-collected", absent()).await;

    operator.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_annotation_deletes_and_never_creates() {
    let cluster = Cluster::start().await;
    let operator = Running::start(cluster.client.clone(), config()).await;
    let httpsos = cluster.httpsos();
    let sos = cluster.scaled_objects();

    // An existing owned ScaledObject is deleted when the annotation appears.
    create(&httpsos, &httpso("skipped", "skip.example.com")).await;
    wait_for(&sos, "skipped", "ScaledObject created", so_has(|_| true)).await;
    patch_httpso(
        &httpsos,
        "skipped",
        json!({"metadata": {"annotations": {SKIP_SCALEDOBJECT_CREATION_ANNOTATION: "true"}}}),
    )
    .await;
    wait_for(&sos, "skipped", "owned ScaledObject deleted", absent()).await;
    let h = wait_for(
        &httpsos,
        "skipped",
        "Ready=True skipped (annotations do not bump generation)",
        httpso_ready("True", "ScaledObjectCreationSkipped", 1),
    )
    .await
    .expect("httpso");
    assert!(
        ready(&h.status.expect("status").conditions)
            .expect("Ready")
            .message
            .contains("skip")
    );

    // Created with the annotation: none is ever created.
    let mut fresh = httpso("never", "never.example.com");
    fresh.annotations_mut().insert(
        SKIP_SCALEDOBJECT_CREATION_ANNOTATION.to_owned(),
        "true".to_owned(),
    );
    create(&httpsos, &fresh).await;
    wait_for(
        &httpsos,
        "never",
        "Ready=True skipped",
        httpso_ready("True", "ScaledObjectCreationSkipped", 1),
    )
    .await;
    assert!(
        within("get", sos.get_opt("never"))
            .await
            .expect("get")
            .is_none()
    );

    // Spec changes keep it that way.
    patch_httpso(&httpsos, "never", json!({"spec": {"replicas": {"max": 3}}})).await;
    wait_for(
        &httpsos,
        "never",
        "gen 2 seen",
        httpso_ready("True", "ScaledObjectCreationSkipped", 2),
    )
    .await;
    assert!(
        within("get", sos.get_opt("never"))
            .await
            .expect("get")
            .is_none()
    );

    // The user's own same-named ScaledObject (the documented use of the annotation) is kept.
    let mut own = ScaledObject::new(
        "mine",
        keda_http_api::ScaledObjectSpec {
            scale_target_ref: keda_http_api::scaled_object::ScaledObjectTargetRef {
                name: "mine".to_owned(),
                ..Default::default()
            },
            min_replica_count: Some(4),
            ..Default::default()
        },
    );
    own.metadata.namespace = Some(NS.to_owned());
    create(&sos, &own).await;
    let mut skipping = httpso("mine", "mine.example.com");
    skipping.annotations_mut().insert(
        SKIP_SCALEDOBJECT_CREATION_ANNOTATION.to_owned(),
        "true".to_owned(),
    );
    create(&httpsos, &skipping).await;
    wait_for(
        &httpsos,
        "mine",
        "Ready=True skipped",
        httpso_ready("True", "ScaledObjectCreationSkipped", 1),
    )
    .await;
    let kept = within("get", sos.get("mine"))
        .await
        .expect("user's ScaledObject kept");
    assert_eq!(kept.spec.min_replica_count, Some(4));
    assert!(kept.owner_references().is_empty());

    operator.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_annotation_drops_owner_and_survives_deletion() {
    let cluster = Cluster::start().await;
    let operator = Running::start(cluster.client.clone(), config()).await;
    let httpsos = cluster.httpsos();
    let sos = cluster.scaled_objects();

    create(&httpsos, &httpso("legacy", "legacy.example.com")).await;
    wait_for(
        &sos,
        "legacy",
        "owned ScaledObject",
        so_has(|so| !so.owner_references().is_empty()),
    )
    .await;
    patch_httpso(
        &httpsos,
        "legacy",
        json!({"metadata": {"annotations": {ORPHAN_SCALEDOBJECT_ANNOTATION: "true"}}}),
    )
    .await;
    wait_for(
        &sos,
        "legacy",
        "ownerReference removed",
        so_has(|so| so.owner_references().is_empty()),
    )
    .await;
    wait_for(
        &httpsos,
        "legacy",
        "Ready=True orphaned",
        httpso_ready("True", "ScaledObjectOrphaned", 1),
    )
    .await;

    within("delete", httpsos.delete("legacy", &DeleteParams::default()))
        .await
        .expect("delete accepted");
    wait_for(&httpsos, "legacy", "HTTPScaledObject removed", absent()).await;
    let so = within("get", sos.get_opt("legacy")).await.expect("get");
    let so = so.expect("orphaned ScaledObject survives its HTTPScaledObject");
    assert_eq!(so.spec.triggers[0].metadata["httpScaledObject"], "legacy");

    operator.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_metrics_is_ready_false_and_changes_nothing() {
    let cluster = Cluster::start().await;
    let operator = Running::start(cluster.client.clone(), config()).await;
    let httpsos = cluster.httpsos();
    let sos = cluster.scaled_objects();

    // Created invalid: Ready=False, no ScaledObject.
    let mut invalid = httpso("both", "both.example.com");
    if let Some(metric) = invalid.spec.scaling_metric.as_mut() {
        metric.request_rate = Some(HttpRequestRateMetric {
            target_value: 10,
            window: None,
            granularity: None,
        });
    }
    create(&httpsos, &invalid).await;
    let h = wait_for(
        &httpsos,
        "both",
        "Ready=False",
        httpso_ready("False", "InvalidScalingMetric", 1),
    )
    .await
    .expect("httpso");
    let status = h.status.expect("status");
    let message = &ready(&status.conditions).expect("Ready").message;
    assert!(
        message.contains("concurrency") && message.contains("requestRate"),
        "{message}"
    );
    assert!(
        within("get", sos.get_opt("both"))
            .await
            .expect("get")
            .is_none()
    );

    // Valid first, then both set together with a new max: Ready=False, ScaledObject unchanged.
    create(&httpsos, &httpso("later", "later.example.com")).await;
    wait_for(
        &httpsos,
        "later",
        "Ready=True",
        httpso_ready("True", "Reconciled", 1),
    )
    .await;
    patch_httpso(
        &httpsos,
        "later",
        json!({"spec": {
            "replicas": {"max": 77},
            "scalingMetric": {"requestRate": {"targetValue": 5}}
        }}),
    )
    .await;
    wait_for(
        &httpsos,
        "later",
        "Ready=False gen 2",
        httpso_ready("False", "InvalidScalingMetric", 2),
    )
    .await;
    let so = within("get", sos.get("later"))
        .await
        .expect("ScaledObject still there");
    assert_eq!(
        so.spec.max_replica_count,
        Some(10),
        "no ScaledObject change"
    );

    // Fixed: back to Ready=True with a new generation, and the ScaledObject follows.
    patch_httpso(
        &httpsos,
        "later",
        json!({"spec": {"scalingMetric": {"requestRate": null}}}),
    )
    .await;
    wait_for(
        &httpsos,
        "later",
        "Ready=True gen 3",
        httpso_ready("True", "Reconciled", 3),
    )
    .await;
    wait_for(
        &sos,
        "later",
        "ScaledObject follows",
        so_has(|so| so.spec.max_replica_count == Some(77)),
    )
    .await;

    operator.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaled_object_controlled_by_another_object_is_a_create_error() {
    let cluster = Cluster::start().await;
    let operator = Running::start(cluster.client.clone(), config()).await;
    let httpsos = cluster.httpsos();
    let sos = cluster.scaled_objects();

    // Someone else's ScaledObject with the same name.
    let mut foreign = keda_http_api::scaled_object::ScaledObject::new(
        "taken",
        keda_http_api::ScaledObjectSpec {
            scale_target_ref: keda_http_api::scaled_object::ScaledObjectTargetRef {
                name: "other".to_owned(),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    foreign.metadata.namespace = Some(NS.to_owned());
    foreign.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "example.com/v1".to_owned(),
            kind: "Tool".to_owned(),
            name: "tool".to_owned(),
            uid: "not-an-httpso".to_owned(),
            controller: Some(true),
            block_owner_deletion: None,
        },
    ]);
    create(&sos, &foreign).await;

    create(&httpsos, &httpso("taken", "taken.example.com")).await;
    let h = wait_for(
        &httpsos,
        "taken",
        "Ready=False CreateError",
        httpso_ready("False", "CreateError", 1),
    )
    .await
    .expect("httpso");
    let status = h.status.expect("status");
    let message = &ready(&status.conditions).expect("Ready").message;
    assert!(
        message.starts_with("Failed to create scaled objects:"),
        "{message}"
    );
    assert!(message.contains("controlled by Tool/tool"), "{message}");
    let so = within("get", sos.get("taken")).await.expect("get");
    assert_eq!(so.spec.scale_target_ref.name, "other", "not taken over");

    // The failure is also a Warning event on the HTTPScaledObject.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.client.clone(), NS);
    let list = within("events", events.list(&Default::default()))
        .await
        .expect("list");
    assert!(
        list.items.iter().any(|e| {
            e.reason.as_deref() == Some("CreateError")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("taken")
        }),
        "no CreateError event in {:?}",
        list.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );

    operator.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespace_limits_what_is_reconciled() {
    let cluster = Cluster::start().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client.clone());
    create(
        &namespaces,
        &k8s_openapi::api::core::v1::Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some("elsewhere".to_owned()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let mut cfg = config();
    cfg.watch_namespace = Some(NS.to_owned());
    let operator = Running::start(cluster.client.clone(), cfg).await;

    let elsewhere: Api<HTTPScaledObject> = Api::namespaced(cluster.client.clone(), "elsewhere");
    let mut outside = httpso("outside", "outside.example.com");
    outside.metadata.namespace = Some("elsewhere".to_owned());
    create(&elsewhere, &outside).await;
    // Created after the outside one: once it is reconciled, the other would have been too.
    create(&cluster.httpsos(), &httpso("inside", "inside.example.com")).await;
    wait_for(
        &cluster.httpsos(),
        "inside",
        "inside reconciled",
        httpso_ready("True", "Reconciled", 1),
    )
    .await;
    let outside = within("get", elsewhere.get("outside")).await.expect("get");
    assert!(
        outside.status.is_none(),
        "outside the watched namespace: untouched"
    );
    assert!(outside.finalizers().is_empty());

    operator.stop().await.expect("clean stop");
}

/// Warning events with `reason` about the HTTPScaledObject `name`.
async fn warnings(client: &kube::Client, name: &str, reason: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let list = within("events", events.list(&Default::default()))
        .await
        .expect("list");
    list.items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_keda_refuses_are_invalid_spec_and_never_applied() {
    let cluster = Cluster::start().await;
    let operator = Running::start(cluster.client.clone(), config()).await;
    let httpsos = cluster.httpsos();
    let sos = cluster.scaled_objects();

    // min above max.
    let mut min_above_max = httpso("minmax", "minmax.example.com");
    min_above_max.spec.replicas = Some(keda_http_api::http_scaled_object::ReplicaBounds {
        min: Some(5),
        max: Some(2),
    });
    create(&httpsos, &min_above_max).await;
    // No workload name.
    let mut nameless = httpso("nameless", "nameless.example.com");
    nameless.spec.scale_target_ref.name = None;
    create(&httpsos, &nameless).await;

    let expected = [
        (
            "minmax",
            "minReplicaCount 5 (spec.replicas.min) is greater than maxReplicaCount 2 \
             (spec.replicas.max), which KEDA refuses",
        ),
        (
            "nameless",
            "spec.scaleTargetRef.name is not set, and KEDA refuses a ScaledObject without the \
             name of the workload to scale",
        ),
    ];
    for (name, want) in expected {
        let h = wait_for(
            &httpsos,
            name,
            "Ready=False InvalidSpec",
            httpso_ready("False", "InvalidSpec", 1),
        )
        .await
        .expect("httpso");
        let status = h.status.expect("status");
        assert_eq!(ready(&status.conditions).expect("Ready").message, want);
        assert!(
            within("get", sos.get_opt(name))
                .await
                .expect("get")
                .is_none(),
            "{name}: no ScaledObject"
        );
        let notes = warnings(&cluster.client, name, "InvalidSpec").await;
        assert_eq!(notes, vec![want.to_owned()], "{name}: one Warning event");
    }

    // Fixed: Ready=True with the new generation and the ScaledObject appears.
    patch_httpso(
        &httpsos,
        "minmax",
        json!({"spec": {"replicas": {"min": 5, "max": 8}}}),
    )
    .await;
    wait_for(
        &httpsos,
        "minmax",
        "Ready=True gen 2",
        httpso_ready("True", "Reconciled", 2),
    )
    .await;
    wait_for(
        &sos,
        "minmax",
        "ScaledObject created once valid",
        so_has(|so| so.spec.min_replica_count == Some(5) && so.spec.max_replica_count == Some(8)),
    )
    .await;

    operator.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_annotations_stay_on_the_httpscaledobject() {
    let cluster = Cluster::start().await;
    let operator = Running::start(cluster.client.clone(), config()).await;
    let httpsos = cluster.httpsos();
    let sos = cluster.scaled_objects();

    let mut applied = httpso("applied", "applied.example.com");
    applied.annotations_mut().insert(
        "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
        r#"{"kind":"HTTPScaledObject"}"#.to_owned(),
    );
    create(&httpsos, &applied).await;
    let so = wait_for(&sos, "applied", "ScaledObject created", so_has(|_| true))
        .await
        .expect("so");
    assert_eq!(
        serde_json::to_value(&so).expect("json")["metadata"]["annotations"],
        json!({"team": "web"})
    );

    operator.stop().await.expect("clean stop");
}
