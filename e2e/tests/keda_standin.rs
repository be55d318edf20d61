//! The KEDA stand-in against the in-memory API server and a scripted scaler: a ScaledObject
//! with an `external-push` trigger is activated from zero by one streamed `true`, follows the
//! HPA formula, reports its conditions, and returns to zero after its cooldown.
// Helpers outside `#[test]` fns unwrap too: any failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use keda_http_api::scaled_object::ScaledObject;
use keda_http_e2e::keda::fake::{FakeConnector, FakeScaler};
use keda_http_e2e::keda::{AddressTable, KedaConfig, KedaStandIn};
use kube::Api;
use kube::api::PostParams;
use kube_standin::LocalApiServer;

const BOUND: Duration = Duration::from_secs(60);

fn deployment() -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "app", "namespace": "default" },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app": "app" } },
            "template": {
                "metadata": { "labels": { "app": "app" } },
                "spec": { "containers": [{ "name": "app", "image": "hello" }] }
            }
        }
    }))
    .unwrap()
}

fn scaled_object(push: bool, cooldown: i32) -> ScaledObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": { "name": "app", "namespace": "default" },
        "spec": {
            "scaleTargetRef": { "name": "app" },
            "pollingInterval": 1,
            "cooldownPeriod": cooldown,
            "minReplicaCount": 0,
            "maxReplicaCount": 4,
            "triggers": [{
                "type": if push { "external-push" } else { "external" },
                "metadata": {
                    "scalerAddress": "keda-add-ons-http-external-scaler.keda:9090",
                    "interceptorRoute": "app"
                }
            }]
        }
    }))
    .unwrap()
}

/// Polls the Deployment's scale subresource until `replicas` (bounded).
async fn wait_replicas(api: &Api<Deployment>, replicas: i32) {
    let poll = async {
        loop {
            let scale = api.get_scale("app").await.unwrap();
            if scale.spec.and_then(|s| s.replicas) == Some(replicas) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(BOUND, poll)
        .await
        .unwrap_or_else(|_| panic!("replicas never became {replicas}"));
}

/// Polls the ScaledObject until its condition `type_` has `status` (bounded).
async fn wait_condition(api: &Api<ScaledObject>, type_: &str, status: &str) {
    let poll = async {
        loop {
            let so = api.get("app").await.unwrap();
            let found = so
                .status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .any(|c| c.type_ == type_ && c.status == status);
            if found {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(BOUND, poll)
        .await
        .unwrap_or_else(|_| panic!("condition {type_} never became {status}"));
}

struct Setup {
    _server: LocalApiServer,
    keda: KedaStandIn,
    scaler: FakeScaler,
    deployments: Api<Deployment>,
    scaled_objects: Api<ScaledObject>,
}

async fn setup(so: ScaledObject, config: KedaConfig) -> Setup {
    let server = LocalApiServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let scaled_objects: Api<ScaledObject> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let scaler = FakeScaler::new();
    scaler.set_metric("http_app_concurrency", 10.0, 0.0);
    let connector = FakeConnector::new();
    connector.insert("fake-scaler:1", scaler.clone());
    let addresses = AddressTable::new();
    addresses.insert(
        "keda-add-ons-http-external-scaler.keda:9090",
        "fake-scaler:1",
    );
    let keda = KedaStandIn::start(client, config, addresses, Arc::new(connector));
    scaled_objects
        .create(&PostParams::default(), &so)
        .await
        .unwrap();
    Setup {
        _server: server,
        keda,
        scaler,
        deployments,
        scaled_objects,
    }
}

fn config() -> KedaConfig {
    let mut config = KedaConfig::fast();
    config.hpa.scale_down_stabilization = Duration::ZERO;
    // Polls an hour apart unless a test wants them: activation must come from the stream.
    config.polling_interval = Some(Duration::from_secs(3600));
    config
}

#[tokio::test]
async fn streamed_true_activates_then_hpa_then_cooldown_to_zero() {
    let t = setup(scaled_object(true, 1), config()).await;
    tokio::time::timeout(BOUND, t.scaler.wait_streams_opened(1))
        .await
        .unwrap();
    wait_condition(&t.scaled_objects, "Ready", "True").await;
    wait_condition(&t.scaled_objects, "Active", "False").await;

    // One streamed `true` scales 0 -> 1.
    t.scaler.set_active(true);
    t.scaler.push(true);
    wait_replicas(&t.deployments, 1).await;
    wait_condition(&t.scaled_objects, "Active", "True").await;

    // HPA: 35 in flight against a target of 10 per replica → ceil(3.5) = 4 (= max).
    t.scaler.set_metric("http_app_concurrency", 10.0, 35.0);
    wait_replicas(&t.deployments, 4).await;
    // 15 → ceil(1.5) = 2.
    t.scaler.set_metric("http_app_concurrency", 10.0, 15.0);
    wait_replicas(&t.deployments, 2).await;

    // Idle: streamed `false`s go to the executor; after the 1 s cooldown it scales to zero.
    t.scaler.set_active(false);
    t.scaler.set_metric("http_app_concurrency", 10.0, 0.0);
    let idle = async {
        loop {
            t.scaler.push(false);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = wait_replicas(&t.deployments, 0) => {}
        () = idle => {}
    }
    wait_condition(&t.scaled_objects, "Active", "False").await;
    t.keda.stop().await;
}

#[tokio::test]
async fn pull_trigger_activates_on_poll_and_reports_scaler_errors() {
    let mut config = config();
    config.polling_interval = Some(Duration::from_millis(200));
    let t = setup(scaled_object(false, 300), config).await;
    wait_condition(&t.scaled_objects, "Ready", "True").await;
    t.scaler.set_failing(true);
    wait_condition(&t.scaled_objects, "Ready", "False").await;
    t.scaler.set_failing(false);
    t.scaler.set_active(true);
    wait_replicas(&t.deployments, 1).await;
    wait_condition(&t.scaled_objects, "Ready", "True").await;
    wait_condition(&t.scaled_objects, "Active", "True").await;
    assert_eq!(
        t.scaler.streams_opened(),
        0,
        "external triggers hold no stream"
    );
    t.keda.stop().await;
}

#[tokio::test]
async fn deleting_the_scaled_object_stops_its_loop() {
    let t = setup(scaled_object(true, 300), config()).await;
    tokio::time::timeout(BOUND, t.scaler.wait_streams_opened(1))
        .await
        .unwrap();
    t.scaled_objects
        .delete("app", &Default::default())
        .await
        .unwrap();
    // Once the loop is gone its stream is dropped: pushes reach nobody.
    let gone = async {
        while t.scaler.push(true) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(BOUND, gone).await.unwrap();
    t.keda.stop().await;
}
