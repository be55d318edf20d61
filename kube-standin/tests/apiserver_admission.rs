//! What a real API server refuses, the stand-in refuses too: label values with `/`,
//! loopback EndpointSlice addresses, unknown fields on our CRDs (with `fieldValidation=Strict`,
//! pruned otherwise), a KEDA ScaledObject with `minReplicaCount > maxReplicaCount` or without
//! a target name, and an InterceptorRoute that breaks one of its CRD's CEL rules.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::bounded;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams, ValidationDirective};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use kube_standin::crds::KEDA_SCALED_OBJECT_CRD;
use kube_standin::{LocalApiServer, ServerConfig};
use serde_json::{Value, json};

/// The add-on chart's CRD, without the Helm guard around it.
fn chart_crd(file: &str) -> String {
    let path = format!(
        "{}/../charts/keda-add-ons-http/templates/crds/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim_start().starts_with("{{"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn server_with_crds() -> (LocalApiServer, Client) {
    let server = LocalApiServer::start().await.unwrap();
    for yaml in [
        chart_crd("interceptorroutes.yaml"),
        chart_crd("httpscaledobjects.yaml"),
        KEDA_SCALED_OBJECT_CRD.to_owned(),
    ] {
        server.apply_manifests(&yaml, "test").unwrap();
    }
    let client = server.client().await.unwrap();
    (server, client)
}

fn dynamic(client: &Client, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), "default", &resource)
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// The code, reason and message of a refused write.
fn refused<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason, status.message),
        other => panic!("expected the server to refuse, got {other:?}"),
    }
}

/// POSTs `body` with `?fieldValidation=Strict`, as kubectl does (kube-rs's `PostParams` has
/// no such option).
async fn create_strict(client: &Client, plural: &str, body: Value) -> Result<Value, kube::Error> {
    let api_version = body["apiVersion"].as_str().unwrap_or_default();
    let uri = format!("/apis/{api_version}/namespaces/default/{plural}?fieldValidation=Strict");
    let request = http::Request::post(uri)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    client.request::<Value>(request).await
}

fn route(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
           "metadata": {"name": name}, "spec": spec})
}

fn good_route_spec() -> Value {
    json!({"target": {"service": "app", "port": 8080},
           "scalingMetric": {"concurrency": {"targetValue": 10}},
           "rules": [{"hosts": ["app.example.com"]}]})
}

#[tokio::test]
async fn label_values_with_a_slash_are_refused() {
    bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let cms: Api<ConfigMap> = Api::default_namespaced(server.client().await.unwrap());
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("cm".into());
        cm.metadata.labels = Some([("owner".to_owned(), "ns/name".to_owned())].into());
        let (code, reason, message) = refused(cms.create(&PostParams::default(), &cm).await);
        assert_eq!((code, reason.as_str()), (422, "Invalid"));
        assert!(
            message.contains("metadata.labels: Invalid value: \"ns/name\""),
            "{message}"
        );

        // The `/` belongs in the key's prefix.
        cm.metadata.labels = Some([("example.com/owner".to_owned(), "name".to_owned())].into());
        cms.create(&PostParams::default(), &cm).await.unwrap();
        // Patches are checked as well.
        let patch = json!({"metadata": {"labels": {"x": "a/b"}}});
        let (code, _, _) = refused(
            cms.patch("cm", &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        );
        assert_eq!(code, 422);
    })
    .await;
}

fn slice(name: &str, address: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "app"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap()
}

#[tokio::test]
async fn loopback_and_link_local_slice_addresses_are_refused() {
    bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let slices: Api<EndpointSlice> = Api::default_namespaced(server.client().await.unwrap());
        for address in ["127.0.0.1", "169.254.10.1"] {
            let (code, _, message) = refused(
                slices
                    .create(&PostParams::default(), &slice("s", address))
                    .await,
            );
            assert_eq!(code, 422, "{address}");
            assert!(message.contains("endpoints[0].addresses[0]"), "{message}");
        }
        slices
            .create(&PostParams::default(), &slice("s", "198.51.100.10"))
            .await
            .unwrap();

        // The test-only relaxation lets loopback through, and nothing else.
        let relaxed = LocalApiServer::start_with(ServerConfig {
            allow_loopback_endpoints: true,
            ..ServerConfig::default()
        })
        .await
        .unwrap();
        let slices: Api<EndpointSlice> = Api::default_namespaced(relaxed.client().await.unwrap());
        slices
            .create(&PostParams::default(), &slice("s", "127.0.0.1"))
            .await
            .unwrap();
        refused(
            slices
                .create(&PostParams::default(), &slice("t", "169.254.10.1"))
                .await,
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_fields_on_our_crds_are_refused_when_strict_and_pruned_otherwise() {
    bounded(async {
        let (_server, client) = server_with_crds().await;
        let routes = dynamic(&client, "http.keda.sh", "v1beta1", "InterceptorRoute");
        let mut spec = good_route_spec();
        spec["bogus"] = json!(true);
        let (code, reason, message) = refused(
            create_strict(&client, "interceptorroutes", route("strict", spec.clone())).await,
        );
        assert_eq!((code, reason.as_str()), (400, "BadRequest"));
        assert!(
            message.contains("unknown field \"spec.bogus\""),
            "{message}"
        );

        // Without `fieldValidation` (kube-rs's default) the server stores the object pruned.
        let stored = routes
            .create(&PostParams::default(), &object(route("lenient", spec)))
            .await
            .unwrap();
        assert!(stored.data["spec"].get("bogus").is_none());
        assert_eq!(stored.data["spec"]["target"]["service"], "app");

        // Server-side apply with Strict refuses too.
        let mut applied = route("applied", good_route_spec());
        applied["spec"]["target"]["extra"] = json!(1);
        let params = PatchParams {
            field_validation: Some(ValidationDirective::Strict),
            ..PatchParams::apply("test")
        };
        let (code, _, message) = refused(
            routes
                .patch("applied", &params, &Patch::Apply(&applied))
                .await,
        );
        assert_eq!(code, 400);
        assert!(message.contains("spec.target.extra"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn schema_and_cel_violations_of_our_crds_are_invalid() {
    bounded(async {
        let (_server, client) = server_with_crds().await;
        let routes = dynamic(&client, "http.keda.sh", "v1beta1", "InterceptorRoute");
        create_strict(&client, "interceptorroutes", route("good", good_route_spec()))
            .await
            .unwrap();

        // CEL: exactly one of port and portName.
        let mut both = good_route_spec();
        both["target"]["portName"] = json!("http");
        let (code, reason, message) = refused(create_strict(&client, "interceptorroutes", route("both", both)).await);
        assert_eq!((code, reason.as_str()), (422, "Invalid"));
        assert!(
            message.contains("spec.target: Invalid value: \"object\": exactly one of 'port' or 'portName' must be set"),
            "{message}"
        );

        // Schema: a port out of range, a missing service.
        let mut bad = good_route_spec();
        bad["target"] = json!({"port": 70000});
        let (code, _, message) = refused(create_strict(&client, "interceptorroutes", route("bad", bad)).await);
        assert_eq!(code, 422);
        assert!(message.contains("spec.target.port"), "{message}");
        assert!(message.contains("spec.target.service: Required value"), "{message}");

        // An update that breaks a rule is refused as well, and the stored object stays.
        let patch = json!({"spec": {"target": {"portName": "http"}}});
        let (code, _, _) = refused(routes.patch("good", &PatchParams::default(), &Patch::Merge(&patch)).await);
        assert_eq!(code, 422);
        let stored = routes.get("good").await.unwrap();
        assert!(stored.data["spec"]["target"].get("portName").is_none());
    })
    .await;
}

fn scaled_object(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
           "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn the_keda_crd_refuses_min_above_max_and_a_missing_target() {
    bounded(async {
        let (_server, client) = server_with_crds().await;
        let sos = dynamic(&client, "keda.sh", "v1alpha1", "ScaledObject");
        let trigger = json!([{"type": "external-push", "metadata": {"scalerAddress": "s:9090"}}]);
        let ok = json!({"scaleTargetRef": {"name": "app"}, "minReplicaCount": 1,
                        "maxReplicaCount": 3, "triggers": trigger});
        sos.create(&PostParams::default(), &object(scaled_object("ok", ok)))
            .await
            .unwrap();

        let min_above_max = json!({"scaleTargetRef": {"name": "app"}, "minReplicaCount": 5,
                                   "maxReplicaCount": 2, "triggers": trigger});
        let (code, _, message) = refused(
            sos.create(
                &PostParams::default(),
                &object(scaled_object("a", min_above_max)),
            )
            .await,
        );
        assert_eq!(code, 422);
        assert!(
            message.contains("minReplicaCount must be less than or equal to maxReplicaCount"),
            "{message}"
        );

        // maxReplicaCount defaults to 100.
        let above_default = json!({"scaleTargetRef": {"name": "app"}, "minReplicaCount": 101,
                                   "triggers": trigger});
        refused(
            sos.create(
                &PostParams::default(),
                &object(scaled_object("b", above_default)),
            )
            .await,
        );

        for (name, spec, field) in [
            (
                "c",
                json!({"scaleTargetRef": {}, "triggers": trigger}),
                "spec.scaleTargetRef.name: Required value",
            ),
            (
                "d",
                json!({"scaleTargetRef": {"name": ""}, "triggers": trigger}),
                "spec.scaleTargetRef.name",
            ),
            (
                "e",
                json!({"scaleTargetRef": {"name": "app"}}),
                "spec.triggers: Required value",
            ),
        ] {
            let (code, _, message) = refused(
                sos.create(&PostParams::default(), &object(scaled_object(name, spec)))
                    .await,
            );
            assert_eq!(code, 422, "{name}");
            assert!(message.contains(field), "{name}: {message}");
        }
    })
    .await;
}
