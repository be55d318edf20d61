//! Patches and subresources: merge, strategic merge, JSON patch and server-side apply on
//! Deployments and on our CRDs; the `status` and `scale` subresources; `generation`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{dynamic, httpso, interceptor_route, scaled_object, status_code};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::Scale;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kube_standin::{LocalApiServer, ServerConfig};
use serde_json::{Value, json};

fn deployment_apply() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"team": "a"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "app", "image": "hello:1",
                    "env": [{"name": "A", "value": "1"}]
                }]}
            }
        }
    })
}

fn containers(d: &Deployment) -> Vec<(String, Option<String>)> {
    d.spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone()))
        .collect()
}

#[tokio::test]
async fn deployments_take_apply_merge_strategic_and_json_patches() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let deployments: Api<Deployment> = Api::namespaced(client, "default");
        let ssa = PatchParams::apply("test-manager");

        // Apply creates.
        let created = deployments
            .patch("web", &ssa, &Patch::Apply(deployment_apply()))
            .await
            .unwrap();
        assert_eq!(created.metadata.generation, Some(1));
        assert_eq!(created.spec.replicas, Some(1), "defaulted");
        let managers: Vec<_> = created
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .map(|m| (m.manager.clone(), m.operation.clone()))
            .collect();
        assert_eq!(
            managers,
            [(Some("test-manager".into()), Some("Apply".into()))]
        );

        // Merge patch.
        let merged = deployments
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"labels": {"tier": "front"}}, "spec": {"replicas": 3}}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(merged.spec.replicas, Some(3));
        assert_eq!(merged.labels().get("team").map(String::as_str), Some("a"));
        assert_eq!(
            merged.labels().get("tier").map(String::as_str),
            Some("front")
        );
        assert_eq!(merged.metadata.generation, Some(2));

        // Strategic merge: containers merge by name, env by name.
        let strategic = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "proxy:1"}
        ]}}}});
        let patched = deployments
            .patch("web", &PatchParams::default(), &Patch::Strategic(strategic))
            .await
            .unwrap();
        assert_eq!(
            containers(&patched),
            [
                ("app".to_owned(), Some("hello:1".to_owned())),
                ("sidecar".to_owned(), Some("proxy:1".to_owned()))
            ]
        );
        let env: Vec<String> = patched.spec.template.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(env, ["A", "B"]);

        // Apply again (forced) updates the applied fields and keeps the others.
        let mut again = deployment_apply();
        again["spec"]["template"]["spec"]["containers"][0]["image"] = json!("hello:2");
        let applied = deployments
            .patch("web", &ssa.clone().force(), &Patch::Apply(again))
            .await
            .unwrap();
        assert_eq!(
            containers(&applied),
            [
                ("app".to_owned(), Some("hello:2".to_owned())),
                ("sidecar".to_owned(), Some("proxy:1".to_owned()))
            ]
        );
        assert_eq!(applied.spec.replicas, Some(3));

        // Re-applying the same configuration is a no-op: same resourceVersion.
        let same = deployments
            .patch("web", &ssa, &Patch::Apply(applied_config(&applied)))
            .await
            .unwrap();
        assert_eq!(
            same.metadata.resource_version,
            applied.metadata.resource_version
        );

        // JSON patch, including a failing `test`.
        let replace = json_patch(json!([{"op": "replace", "path": "/spec/replicas", "value": 5}]));
        let jp = deployments
            .patch("web", &PatchParams::default(), &replace)
            .await
            .unwrap();
        assert_eq!(jp.spec.replicas, Some(5));
        let failing = json_patch(json!([{"op": "test", "path": "/spec/replicas", "value": 4}]));
        assert_eq!(
            status_code(
                deployments
                    .patch("web", &PatchParams::default(), &failing)
                    .await
            )
            .0,
            422
        );
    })
    .await;
}

/// A `Patch::Json` from JSON (kube does not re-export the json-patch crate's types).
fn json_patch(ops: Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(ops).unwrap())
}

fn applied_config(d: &Deployment) -> Value {
    let mut v = serde_json::to_value(d).unwrap();
    let meta = v["metadata"].as_object_mut().unwrap();
    for k in [
        "managedFields",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
    ] {
        meta.remove(k);
    }
    v
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_spec_replicas() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let deployments: Api<Deployment> = Api::namespaced(client, "default");
        deployments
            .patch(
                "web",
                &PatchParams::apply("t"),
                &Patch::Apply(deployment_apply()),
            )
            .await
            .unwrap();
        deployments
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"replicas": 1, "readyReplicas": 1}})),
            )
            .await
            .unwrap();

        let scale = deployments.get_scale("web").await.unwrap();
        assert_eq!(scale.spec.as_ref().unwrap().replicas, Some(1));
        let status = scale.status.as_ref().unwrap();
        assert_eq!(status.replicas, 1);
        assert_eq!(status.selector.as_deref(), Some("app=web"));

        let patched = deployments
            .patch_scale(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 4}})),
            )
            .await
            .unwrap();
        assert_eq!(patched.spec.unwrap().replicas, Some(4));
        let d = deployments.get("web").await.unwrap();
        assert_eq!(d.spec.replicas, Some(4));
        assert_eq!(d.metadata.generation, Some(2));

        // replace_scale with the current resourceVersion works, with a stale one is a 409.
        let mut current: Scale = deployments.get_scale("web").await.unwrap();
        let stale = current.clone();
        current.spec.as_mut().unwrap().replicas = Some(0);
        deployments
            .replace_scale("web", &PostParams::default(), &current)
            .await
            .unwrap();
        assert_eq!(deployments.get("web").await.unwrap().spec.replicas, Some(0));
        assert_eq!(
            status_code(
                deployments
                    .replace_scale("web", &PostParams::default(), &stale)
                    .await
            )
            .0,
            409
        );
        assert_eq!(
            status_code(
                deployments
                    .patch_scale(
                        "web",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"replicas": -1}}))
                    )
                    .await
            )
            .0,
            422
        );
    })
    .await;
}

#[tokio::test]
async fn status_subresource_ignores_spec_and_main_resource_ignores_status() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let deployments: Api<Deployment> = Api::namespaced(client, "default");
        let d = deployments
            .patch(
                "web",
                &PatchParams::apply("t"),
                &Patch::Apply(deployment_apply()),
            )
            .await
            .unwrap();

        let s = deployments
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"replicas": 2}})),
            )
            .await
            .unwrap();
        assert_eq!(s.spec.replicas, Some(1));
        assert_eq!(s.status.as_ref().unwrap().replicas, Some(2));
        assert_eq!(s.metadata.generation, d.metadata.generation);

        let m = deployments
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"replicas": 7}, "metadata": {"labels": {"x": "y"}}}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(m.status.as_ref().unwrap().replicas, Some(2));
        assert_eq!(
            m.metadata.generation, d.metadata.generation,
            "labels are not spec"
        );
    })
    .await;
}

#[tokio::test]
async fn our_crds_take_apply_merge_and_status_patches() {
    common::bounded(async {
    let server = LocalApiServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let hsos = dynamic(&client, "default", &httpso());
    let ssa = PatchParams::apply("keda-http-operator");
    let apply = json!({
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": "app"},
        "spec": {"hosts": ["app.test"], "scaleTargetRef": {"name": "app", "service": "app", "port": 8080},
                 "replicas": {"min": 0, "max": 5}}
    });
    let created = hsos
        .patch("app", &ssa, &Patch::Apply(&apply))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let merged = hsos
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": {"max": 10}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data["spec"]["replicas"],
        json!({"min": 0, "max": 10})
    );
    assert_eq!(merged.metadata.generation, Some(2));

    // Lists in custom resources are atomic under apply.
    let mut reapply = apply.clone();
    reapply["spec"]["hosts"] = json!(["other.test"]);
    let applied = hsos
        .patch("app", &ssa, &Patch::Apply(&reapply))
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["hosts"], json!(["other.test"]));
    assert_eq!(applied.data["spec"]["replicas"]["max"], 5);
    assert_eq!(applied.metadata.generation, Some(3));

    // Status: only via the subresource, and it does not bump generation.
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]},
                        "spec": {"hosts": ["ignored.test"]}});
    let with_status = hsos
        .patch_status("app", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(with_status.data["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(with_status.data["spec"]["hosts"], json!(["other.test"]));
    assert_eq!(with_status.metadata.generation, Some(3));
    let ignored = hsos
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": []}})),
        )
        .await
        .unwrap();
    assert_eq!(ignored.data["status"]["conditions"][0]["type"], "Ready");

    // Server-side apply to the status subresource.
    let status_apply = json!({"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": "app"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    let applied_status = hsos
        .patch_status("app", &ssa, &Patch::Apply(&status_apply))
        .await
        .unwrap();
    assert_eq!(
        applied_status.data["status"]["conditions"][0]["status"],
        "False"
    );

    // InterceptorRoutes and ScaledObjects too.
    let routes = dynamic(&client, "default", &interceptor_route());
    let route = json!({"apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": {"name": "r"}, "spec": {"target": {"service": "app", "port": 8080}}});
    routes
        .patch("r", &ssa, &Patch::Apply(&route))
        .await
        .unwrap();
    let sos = dynamic(&client, "default", &scaled_object());
    let so = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "app"}, "spec": {"scaleTargetRef": {"name": "app"}, "minReplicaCount": 0}});
    sos.patch("app", &ssa, &Patch::Apply(&so)).await.unwrap();
    let so = sos
        .patch_status(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"originalReplicaCount": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(so.data["status"]["originalReplicaCount"], 1);
    assert_eq!(
        routes.get("r").await.unwrap().data["spec"]["target"]["port"],
        8080
    );

    // Strategic merge on a custom resource: 415, as on a real server.
    assert_eq!(
        status_code(
            hsos.patch(
                "app",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {}}))
            )
            .await
        )
        .0,
        415
    );
    })
    .await;
}

#[tokio::test]
async fn strategic_merge_on_crds_when_enabled() {
    common::bounded(async {
    let server = LocalApiServer::start_with(ServerConfig {
        strategic_merge_for_custom_resources: true,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let client = server.client().await.unwrap();
    let sos = dynamic(&client, "default", &scaled_object());
    let so: DynamicObject = serde_json::from_value(json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "app"}, "spec": {"scaleTargetRef": {"name": "app"}, "maxReplicaCount": 3,
        "triggers": [{"type": "external-push"}]}}))
    .unwrap();
    sos.create(&PostParams::default(), &so).await.unwrap();
    let patched = sos
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"maxReplicaCount": 7, "triggers": [{"type": "cpu"}]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["maxReplicaCount"], 7);
    assert_eq!(patched.data["spec"]["triggers"], json!([{"type": "cpu"}]));
    assert_eq!(patched.data["spec"]["scaleTargetRef"]["name"], "app");
    })
    .await;
}

#[tokio::test]
async fn dry_run_persists_nothing() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let sos = dynamic(&client, "default", &scaled_object());
        let so: DynamicObject = serde_json::from_value(json!({"apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject", "metadata": {"name": "dry"}, "spec": {}}))
        .unwrap();
        let pp = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let answered = sos.create(&pp, &so).await.unwrap();
        assert_eq!(answered.name_any(), "dry");
        assert_eq!(status_code(sos.get("dry").await).0, 404);
    })
    .await;
}

#[tokio::test]
async fn apply_needs_a_field_manager_and_a_type() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let deployments: Api<Deployment> = Api::namespaced(client, "default");
        assert_eq!(
            status_code(
                deployments
                    .patch(
                        "web",
                        &PatchParams::default(),
                        &Patch::Apply(deployment_apply())
                    )
                    .await
            )
            .0,
            422
        );
        let mut untyped = deployment_apply();
        untyped.as_object_mut().unwrap().remove("kind");
        assert_eq!(
            status_code(
                deployments
                    .patch("web", &PatchParams::apply("t"), &Patch::Apply(untyped))
                    .await
            )
            .0,
            400
        );
    })
    .await;
}
