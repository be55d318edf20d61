//! CRUD semantics of the local API server through the real kube-rs client: server-set
//! metadata, 404/409 errors with `Status` bodies, selectors, pagination, namespaces,
//! finalizers, garbage collection, discovery, auth and injected faults.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{raw_request, rv_of, status_code, within};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Api, Resource, ResourceExt};
use kube_standin::LocalApiServer;
use serde_json::json;

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn server_sets_metadata_and_resource_versions_increase() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let pp = PostParams::default();

        let a = cms.create(&pp, &config_map("a", &[])).await.unwrap();
        let b = cms.create(&pp, &config_map("b", &[])).await.unwrap();
        assert!(a.metadata.uid.as_deref().is_some_and(|u| u.len() == 36));
        assert_ne!(a.metadata.uid, b.metadata.uid);
        assert!(a.metadata.creation_timestamp.is_some());
        assert_eq!(a.metadata.generation, Some(1));
        assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
        assert!(rv_of(&b.metadata) > rv_of(&a.metadata));

        let mut changed = a.clone();
        changed.data = Some(BTreeMap::from([("k".to_owned(), "w".to_owned())]));
        let c = cms.replace("a", &pp, &changed).await.unwrap();
        assert!(rv_of(&c.metadata) > rv_of(&b.metadata));
        assert_eq!(c.metadata.uid, a.metadata.uid);
        assert_eq!(c.metadata.creation_timestamp, a.metadata.creation_timestamp);

        let mut generated = config_map("", &[]);
        generated.metadata.name = None;
        generated.metadata.generate_name = Some("gen-".to_owned());
        let g = cms.create(&pp, &generated).await.unwrap();
        let name = g.name_any();
        assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
        assert!(cms.get(&name).await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn errors_are_kubernetes_statuses() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let pp = PostParams::default();
        let first = cms.create(&pp, &config_map("x", &[])).await.unwrap();

        assert_eq!(
            status_code(cms.create(&pp, &config_map("x", &[])).await),
            (409, "AlreadyExists".to_owned())
        );
        assert_eq!(
            status_code(cms.get("missing").await),
            (404, "NotFound".to_owned())
        );

        // Update from a stale copy: 409 Conflict.
        let mut newer = first.clone();
        newer.data = Some(BTreeMap::from([("k".to_owned(), "2".to_owned())]));
        cms.replace("x", &pp, &newer).await.unwrap();
        let mut stale = first.clone();
        stale.data = Some(BTreeMap::from([("k".to_owned(), "3".to_owned())]));
        assert_eq!(
            status_code(cms.replace("x", &pp, &stale).await),
            (409, "Conflict".to_owned())
        );

        // The 404 body is a metav1.Status.
        let (code, body) = raw_request(
            server.addr(),
            "GET",
            "/api/v1/namespaces/default/configmaps/missing",
            Some(server.token()),
        )
        .await;
        assert_eq!(code, 404);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["details"]["name"], "missing");

        // A namespaced object in a namespace that does not exist.
        let nowhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
        assert_eq!(
            status_code(nowhere.create(&pp, &config_map("y", &[])).await).0,
            404
        );
        // An invalid name.
        assert_eq!(
            status_code(cms.create(&pp, &config_map("Bad_Name", &[])).await).0,
            422
        );
        // A bad label selector.
        assert_eq!(
            status_code(cms.list(&ListParams::default().labels("a in b")).await).0,
            400
        );
        // A body that is not JSON, and a method the resource does not take.
        let path = "/api/v1/namespaces/default/configmaps";
        assert_eq!(
            raw_request(server.addr(), "POST", path, Some(server.token()))
                .await
                .0,
            400
        );
        assert_eq!(
            raw_request(server.addr(), "PUT", path, Some(server.token()))
                .await
                .0,
            405
        );
        // An unknown resource.
        let (code, _) = raw_request(
            server.addr(),
            "GET",
            "/apis/nope.io/v1/things",
            Some(server.token()),
        )
        .await;
        assert_eq!(code, 404);
    })
    .await;
}

#[tokio::test]
async fn requests_without_the_bearer_token_get_401() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let path = "/api/v1/namespaces/default/configmaps";
        assert_eq!(raw_request(server.addr(), "GET", path, None).await.0, 401);
        assert_eq!(
            raw_request(server.addr(), "GET", path, Some("wrong"))
                .await
                .0,
            401
        );
        assert_eq!(
            raw_request(server.addr(), "GET", path, Some(server.token()))
                .await
                .0,
            200
        );
    })
    .await;
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let pp = PostParams::default();
        cms.create(
            &pp,
            &config_map("web", &[("app", "web"), ("tier", "front")]),
        )
        .await
        .unwrap();
        cms.create(&pp, &config_map("db", &[("app", "db")]))
            .await
            .unwrap();
        cms.create(&pp, &config_map("plain", &[])).await.unwrap();

        let names = |selector: &'static str| {
            let cms = cms.clone();
            async move {
                let mut names: Vec<String> = cms
                    .list(&ListParams::default().labels(selector))
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .map(ResourceExt::name_any)
                    .collect();
                names.sort();
                names
            }
        };
        assert_eq!(names("app=web").await, ["web"]);
        assert_eq!(names("app==db").await, ["db"]);
        assert_eq!(names("app!=web").await, ["db", "plain"]);
        assert_eq!(names("app in (web,db)").await, ["db", "web"]);
        assert_eq!(names("app notin (web)").await, ["db", "plain"]);
        assert_eq!(names("app").await, ["db", "web"]);
        assert_eq!(names("!app").await, ["plain"]);
        assert_eq!(names("app,tier=front").await, ["web"]);

        let by_field = cms
            .list(&ListParams::default().fields("metadata.name=db"))
            .await
            .unwrap();
        assert_eq!(by_field.items.len(), 1);
        let not_db = cms
            .list(&ListParams::default().fields("metadata.name!=db,metadata.namespace=default"))
            .await
            .unwrap();
        assert_eq!(not_db.items.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn namespaces_scope_objects_and_all_namespace_lists_see_everything() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let pp = PostParams::default();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some("other".to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces.create(&pp, &ns).await.unwrap();
        let here: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let there: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
        here.create(&pp, &config_map("same", &[])).await.unwrap();
        there.create(&pp, &config_map("same", &[])).await.unwrap();
        there
            .create(&pp, &config_map("only-there", &[]))
            .await
            .unwrap();

        assert_eq!(
            here.list(&ListParams::default()).await.unwrap().items.len(),
            1
        );
        assert_eq!(
            there
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
            2
        );
        let all: Api<ConfigMap> = Api::all(client.clone());
        let everything = all.list(&ListParams::default()).await.unwrap();
        assert_eq!(everything.items.len(), 3);
        let in_other = all
            .list(&ListParams::default().fields("metadata.namespace=other"))
            .await
            .unwrap();
        assert_eq!(in_other.items.len(), 2);

        // Deleting the namespace deletes what is in it.
        namespaces
            .delete("other", &DeleteParams::default())
            .await
            .unwrap();
        assert_eq!(
            all.list(&ListParams::default()).await.unwrap().items.len(),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let pp = PostParams::default();
        for i in 0..25 {
            cms.create(&pp, &config_map(&format!("cm-{i:02}"), &[]))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut lp = ListParams::default().limit(10);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = cms.list(&lp).await.unwrap();
            pages += 1;
            assert!(page.items.len() <= 10);
            seen.extend(page.items.iter().map(ResourceExt::name_any));
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        assert_eq!(pages, 3);
        let expected: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
        assert_eq!(seen, expected);

        // Pages come from a snapshot at the first page: later changes do not show.
        let first = cms.list(&ListParams::default().limit(10)).await.unwrap();
        let list_rv = first.metadata.resource_version.clone();
        cms.delete("cm-24", &DeleteParams::default()).await.unwrap();
        cms.create(&pp, &config_map("cm-99", &[])).await.unwrap();
        let token = first.metadata.continue_.clone().unwrap();
        let second = cms
            .list(&ListParams::default().limit(100).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(second.metadata.resource_version, list_rv);
        let rest: Vec<String> = second.items.iter().map(ResourceExt::name_any).collect();
        assert_eq!(rest, expected[10..]);

        // A continue token from before a compaction has expired.
        let first = cms.list(&ListParams::default().limit(10)).await.unwrap();
        server.faults().compact_history();
        let token = first.metadata.continue_.unwrap();
        assert_eq!(
            status_code(
                cms.list(&ListParams::default().limit(10).continue_token(&token))
                    .await
            ),
            (410, "Expired".to_owned())
        );
    })
    .await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut cm = config_map("held", &[]);
        cm.metadata.finalizers = Some(vec!["example.com/hold".to_owned()]);
        cms.create(&PostParams::default(), &cm).await.unwrap();

        cms.delete("held", &DeleteParams::default()).await.unwrap();
        let held = cms.get("held").await.unwrap();
        assert!(held.metadata.deletion_timestamp.is_some());
        // A second delete changes nothing.
        cms.delete("held", &DeleteParams::default()).await.unwrap();
        assert_eq!(
            cms.get("held").await.unwrap().metadata.resource_version,
            held.metadata.resource_version
        );

        let release = json!({"metadata": {"finalizers": null}});
        cms.patch("held", &PatchParams::default(), &Patch::Merge(&release))
            .await
            .unwrap();
        assert_eq!(status_code(cms.get("held").await).0, 404);
    })
    .await;
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let pp = PostParams::default();
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let owner: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "owner"},
            "spec": {"selector": {"matchLabels": {"app": "o"}},
                     "template": {"metadata": {"labels": {"app": "o"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap();
        let owner = deployments.create(&pp, &owner).await.unwrap();
        let owner_ref = json!([{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "owner",
            "uid": owner.metadata.uid.clone().unwrap(), "controller": true
        }]);
        for name in ["dep-1", "dep-2"] {
            let mut cm = config_map(name, &[]);
            cm.metadata.owner_references = Some(serde_json::from_value(owner_ref.clone()).unwrap());
            cms.create(&pp, &cm).await.unwrap();
        }
        // A dependent of a dependent goes too.
        let dep1 = cms.get("dep-1").await.unwrap();
        let mut grandchild = config_map("grandchild", &[]);
        grandchild.metadata.owner_references = Some(
            serde_json::from_value(
                json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "dep-1",
            "uid": dep1.metadata.uid.clone().unwrap(), "controller": true}]),
            )
            .unwrap(),
        );
        cms.create(&pp, &grandchild).await.unwrap();
        cms.create(&pp, &config_map("unrelated", &[]))
            .await
            .unwrap();

        deployments
            .delete("owner", &DeleteParams::default())
            .await
            .unwrap();
        let left: Vec<String> = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        assert_eq!(left, ["unrelated"]);

        // Orphan propagation leaves dependents alone.
        let owner2 = deployments
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": "owner2"}, "spec": {
            "selector": {"matchLabels": {"app": "o"}},
            "template": {"metadata": {"labels": {"app": "o"}}, "spec": {"containers": []}}}}))
                .unwrap(),
            )
            .await
            .unwrap();
        let mut orphan = config_map("orphan", &[]);
        orphan.metadata.owner_references = Some(
            serde_json::from_value(json!([{"apiVersion": "apps/v1", "kind": "Deployment",
            "name": "owner2", "uid": owner2.metadata.uid.clone().unwrap(), "controller": true}]))
            .unwrap(),
        );
        cms.create(&pp, &orphan).await.unwrap();
        deployments
            .delete("owner2", &DeleteParams::orphan())
            .await
            .unwrap();
        assert!(cms.get("orphan").await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn discovery_finds_builtin_kinds_and_our_crds() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let version = client.apiserver_version().await.unwrap();
        assert_eq!(version.major, "1");
        let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
        let found = |group: &str, kind: &str| {
            discovery
                .groups()
                .filter(|g| g.name() == group)
                .flat_map(|g| g.recommended_resources())
                .any(|(ar, _)| ar.kind == kind)
        };
        assert!(found("", "ConfigMap"));
        assert!(found("apps", "Deployment"));
        assert!(found("discovery.k8s.io", "EndpointSlice"));
        assert!(found("coordination.k8s.io", "Lease"));
        assert!(found("keda.sh", "ScaledObject"));
        let http = discovery
            .groups()
            .find(|g| g.name() == "http.keda.sh")
            .unwrap();
        let kinds: Vec<String> = http
            .versions()
            .flat_map(|v| http.versioned_resources(v))
            .map(|(ar, _)| ar.kind)
            .collect();
        assert!(kinds.contains(&"HTTPScaledObject".to_owned()), "{kinds:?}");
        assert!(kinds.contains(&"InterceptorRoute".to_owned()), "{kinds:?}");

        // Aggregated discovery (two requests) finds the same.
        let aggregated = kube::Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap();
        let found_aggregated = |group: &str, kind: &str| {
            aggregated
                .groups()
                .filter(|g| g.name() == group)
                .flat_map(|g| g.recommended_resources())
                .any(|(ar, _)| ar.kind == kind)
        };
        assert!(found_aggregated("", "Namespace"));
        assert!(found_aggregated("apps", "Deployment"));
        assert!(found_aggregated("keda.sh", "ScaledObject"));
        assert!(found_aggregated("http.keda.sh", "InterceptorRoute"));
    })
    .await;
}

#[tokio::test]
async fn creating_a_crd_serves_its_kind() {
    common::bounded(async {
    let server = LocalApiServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let crds: Api<kube::api::DynamicObject> = Api::all_with(
        client.clone(),
        &common::resource(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
    );
    let crd: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "subresources": {"status": {}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    // Established at once, so kube-rs' `is_crd_established` wait returns.
    let typed: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    within(
        "the CRD to be established",
        kube::runtime::wait::await_condition(
            typed,
            "widgets.example.com",
            kube::runtime::wait::conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap();
    let widgets = common::dynamic(
        &client,
        "default",
        &common::resource("example.com", "v1", "Widget", "widgets"),
    );
    let w: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}
    }))
    .unwrap();
    widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(widgets.get("w1").await.unwrap().data["spec"]["size"], 3);
    })
    .await;
}

#[tokio::test]
async fn injected_failures_and_delays() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");

        server.faults().fail_next(2);
        assert_eq!(status_code(cms.list(&ListParams::default()).await).0, 500);
        assert_eq!(status_code(cms.list(&ListParams::default()).await).0, 500);
        assert!(cms.list(&ListParams::default()).await.is_ok());

        server.faults().delay_next(1, Duration::from_secs(3600));
        let held =
            tokio::time::timeout(Duration::from_millis(300), cms.list(&ListParams::default()))
                .await;
        assert!(held.is_err(), "the delayed request should still be held");
        within("an undelayed request", cms.list(&ListParams::default()))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn metadata_only_reads() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        cms.create(&PostParams::default(), &config_map("m", &[("app", "x")]))
            .await
            .unwrap();
        let one = cms.get_metadata("m").await.unwrap();
        assert_eq!(one.metadata.labels.unwrap()["app"], "x");
        let request = http::Request::get("/api/v1/namespaces/default/configmaps/m")
            .header(
                http::header::ACCEPT,
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            )
            .body(Vec::new())
            .unwrap();
        let raw: serde_json::Value =
            serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap();
        assert_eq!(raw["kind"], "PartialObjectMetadata");
        assert_eq!(raw["apiVersion"], "meta.k8s.io/v1");
        assert!(raw.get("data").is_none());
        let list = cms.list_metadata(&ListParams::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.items[0].metadata.name.as_deref(), Some("m"));
    })
    .await;
}

#[tokio::test]
async fn leases_and_events_work_like_the_programs_use_them() {
    common::bounded(async {
        use k8s_openapi::api::coordination::v1::Lease;
        use kube::runtime::events::{Event, EventType, Recorder, Reporter};

        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();

        // Leader election style: create, then compare-and-swap replaces.
        let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "operator-leader"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
        }))
        .unwrap();
        let held = leases.create(&PostParams::default(), &lease).await.unwrap();
        let mut take = held.clone();
        take.spec.as_mut().unwrap().holder_identity = Some("b".to_owned());
        leases
            .replace("operator-leader", &PostParams::default(), &take)
            .await
            .unwrap();
        let mut racing = held.clone();
        racing.spec.as_mut().unwrap().holder_identity = Some("c".to_owned());
        assert_eq!(
            status_code(
                leases
                    .replace("operator-leader", &PostParams::default(), &racing)
                    .await
            )
            .0,
            409
        );

        // kube-rs' event recorder (events.k8s.io/v1): create, then patch for a repeat.
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "test".to_owned(),
                instance: None,
            },
        );
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let cm = cms
            .create(&PostParams::default(), &config_map("evented", &[]))
            .await
            .unwrap();
        let event = Event {
            type_: EventType::Normal,
            reason: "Tested".to_owned(),
            note: Some("hello".to_owned()),
            action: "Test".to_owned(),
            secondary: None,
        };
        let reference = cm.object_ref(&());
        recorder.publish(&event, &reference).await.unwrap();
        recorder.publish(&event, &reference).await.unwrap();
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "default");
        let stored = events.list(&ListParams::default()).await.unwrap();
        assert_eq!(stored.items.len(), 1);
        assert_eq!(stored.items[0].reason.as_deref(), Some("Tested"));
        assert_eq!(stored.items[0].series.as_ref().map(|s| s.count), Some(2));
    })
    .await;
}

#[tokio::test]
async fn services_get_server_defaults() {
    common::bounded(async {
        use k8s_openapi::api::core::v1::Service;
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let services: Api<Service> = Api::namespaced(client, "default");
        let service = |name: &str, cluster_ip: Option<&str>| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"clusterIP": cluster_ip, "selector": {"app": name},
                         "ports": [{"name": "http", "port": 8080}]}
            }))
            .unwrap()
        };
        let pp = PostParams::default();
        let a = services
            .create(&pp, &service("a", None))
            .await
            .unwrap()
            .spec
            .unwrap();
        let b = services
            .create(&pp, &service("b", None))
            .await
            .unwrap()
            .spec
            .unwrap();
        let headless = services
            .create(&pp, &service("h", Some("None")))
            .await
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(a.type_.as_deref(), Some("ClusterIP"));
        assert!(
            a.cluster_ip
                .as_deref()
                .is_some_and(|ip| ip.starts_with("10.96."))
        );
        assert_ne!(a.cluster_ip, b.cluster_ip);
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        let port = &a.ports.unwrap()[0];
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        assert_eq!(port.target_port, Some(IntOrString::Int(8080)));
    })
    .await;
}
