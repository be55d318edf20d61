//! A kube-rs `Controller` over HTTPScaledObjects that owns ScaledObjects, run against the
//! local API server: it reconciles on create, on a spec change and on a change of an owned
//! object, and its finalizer flow completes (cleanup, then the object and, by garbage
//! collection, its ScaledObject are gone).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{dynamic, httpso, scaled_object, within};
use futures::StreamExt;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use kube_standin::LocalApiServer;
use serde_json::json;
use tokio::sync::mpsc;

const FINALIZER: &str = "http.keda.sh/test-finalizer";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    generation: i64,
    /// The `poke` label of the ScaledObject as read at the start of the reconcile.
    poke: Option<String>,
    cleanup: bool,
}

struct Ctx {
    client: Client,
    reports: mpsc::UnboundedSender<Report>,
}

async fn reconcile(
    hso: Arc<DynamicObject>,
    ctx: Arc<Ctx>,
) -> Result<Action, finalizer::Error<kube::Error>> {
    let ns = hso.namespace().unwrap_or_default();
    let hsos = dynamic(&ctx.client, &ns, &httpso());
    finalizer::finalizer(&hsos, FINALIZER, hso, |event| async {
        match event {
            Finalizer::Apply(hso) => {
                let sos = dynamic(&ctx.client, &ns, &scaled_object());
                let name = hso.name_any();
                let poke = sos
                    .get_opt(&name)
                    .await?
                    .and_then(|so| so.labels().get("poke").cloned());
                let owner = hso.controller_owner_ref(&httpso()).unwrap();
                let so = json!({
                    "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                    "metadata": {"name": name, "ownerReferences": [owner]},
                    "spec": {
                        "scaleTargetRef": {"name": hso.data["spec"]["scaleTargetRef"]["name"]},
                        "maxReplicaCount": hso.data["spec"]["replicas"]["max"],
                    }
                });
                sos.patch(
                    &name,
                    &PatchParams::apply("test-operator").force(),
                    &Patch::Apply(&so),
                )
                .await?;
                let _ = ctx.reports.send(Report {
                    generation: hso.metadata.generation.unwrap_or_default(),
                    poke,
                    cleanup: false,
                });
                Ok(Action::await_change())
            }
            Finalizer::Cleanup(hso) => {
                let _ = ctx.reports.send(Report {
                    generation: hso.metadata.generation.unwrap_or_default(),
                    poke: None,
                    cleanup: true,
                });
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(
    _hso: Arc<DynamicObject>,
    _error: &finalizer::Error<kube::Error>,
    _ctx: Arc<Ctx>,
) -> Action {
    Action::requeue(Duration::from_millis(50))
}

async fn wait_report(
    reports: &mut mpsc::UnboundedReceiver<Report>,
    what: &str,
    want: impl Fn(&Report) -> bool,
) -> Report {
    within(what, async {
        loop {
            let report = reports.recv().await.expect("controller stopped");
            if want(&report) {
                return report;
            }
        }
    })
    .await
}

#[tokio::test]
async fn controller_reconciles_owned_objects_and_finalizes() {
    common::bounded(async {
    let server = LocalApiServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let hsos = dynamic(&client, "default", &httpso());
    let sos = dynamic(&client, "default", &scaled_object());

    let (tx, mut reports) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        reports: tx,
    });
    let controller = Controller::new_with(hsos.clone(), watcher::Config::default(), httpso())
        .owns_with(sos.clone(), scaled_object(), watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    // Create: reconciled, finalizer added, ScaledObject created with a controller reference.
    let hso: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": "app"},
        "spec": {"hosts": ["app.test"], "scaleTargetRef": {"name": "app", "service": "app", "port": 8080},
                 "replicas": {"min": 0, "max": 5}}
    }))
    .unwrap();
    let hso = hsos.create(&PostParams::default(), &hso).await.unwrap();
    wait_report(&mut reports, "the create reconcile", |r| r.generation == 1).await;
    let live = hsos.get("app").await.unwrap();
    assert_eq!(live.finalizers(), [FINALIZER]);
    let so = sos.get("app").await.unwrap();
    assert_eq!(so.data["spec"]["maxReplicaCount"], 5);
    let owner = &so.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(Some(&owner.uid), hso.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));

    // Spec change: reconciled at the new generation, ScaledObject follows.
    hsos.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": {"max": 7}}})),
    )
    .await
    .unwrap();
    wait_report(&mut reports, "the spec-change reconcile", |r| {
        r.generation == 2
    })
    .await;
    assert_eq!(
        sos.get("app").await.unwrap().data["spec"]["maxReplicaCount"],
        7
    );

    // A change to the owned ScaledObject alone triggers a reconcile that sees it.
    for poke in ["1", "2"] {
        sos.patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"poke": poke}}})),
        )
        .await
        .unwrap();
        wait_report(&mut reports, "the owned-change reconcile", |r| {
            r.poke.as_deref() == Some(poke)
        })
        .await;
    }

    // Deletion: cleanup runs, the finalizer is removed, the object and its ScaledObject go.
    let so_uid = sos.get("app").await.unwrap().uid().unwrap();
    let hso_uid = hso.uid().unwrap();
    hsos.delete("app", &Default::default()).await.unwrap();
    wait_report(&mut reports, "the cleanup", |r| r.cleanup).await;
    within(
        "the HTTPScaledObject to be deleted",
        await_condition(hsos.clone(), "app", conditions::is_deleted(&hso_uid)),
    )
    .await
    .unwrap();
    within(
        "the ScaledObject to be garbage-collected",
        await_condition(sos.clone(), "app", conditions::is_deleted(&so_uid)),
    )
    .await
    .unwrap();

    controller.abort();
    })
    .await;
}
