//! Two (then three) in-process operators with leader election on one API server: only the Lease
//! holder reconciles; a killed leader is replaced once its Lease expires, a stopped one hands
//! over at once by releasing it; a leader that finds another holder stops. Also checks the
//! probe and metrics endpoints of leader and standby.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use keda_http_api::ScaledObject;
use keda_http_operator::config::{LEASE_NAME, LeaderTimings};
use keda_http_operator::{Config, Error};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

fn elected(identity: &str) -> Config {
    let mut c = config();
    c.leader_elect = true;
    c.identity = identity.to_owned();
    // Short but forgiving on a busy machine: a leader must stall for 3s to lose the Lease.
    c.leader_timings = LeaderTimings {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_millis(250),
    };
    c.metrics_addr = Some("127.0.0.1:0".parse().expect("addr"));
    c.probe_addr = Some("127.0.0.1:0".parse().expect("addr"));
    c
}

fn held_by(identity: &'static str) -> impl kube::runtime::wait::Condition<Lease> {
    move |l: Option<&Lease>| {
        l.and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.as_deref())
            == Some(identity)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let cluster = Cluster::start().await;
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "keda");
    let sos = cluster.scaled_objects();
    let httpsos = cluster.httpsos();

    let a = Running::start(cluster.client.clone(), elected("op-a")).await;
    wait_for(&leases, LEASE_NAME, "op-a leads", held_by("op-a")).await;
    let b = Running::start(cluster.client.clone(), elected("op-b")).await;

    // Both replicas are live and ready; only the leader reports leadership.
    for op in [&a, &b] {
        let probes = op.probe_addr.expect("probe listener");
        assert_eq!(http_get(probes, "/healthz").await.0, 200);
        assert_eq!(http_get(probes, "/readyz").await.0, 200);
    }
    let (code, text) = http_get(a.metrics_addr.expect("metrics"), "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        text.contains("leader_election_master_status{name=\"http-add-on.keda.sh\"} 1"),
        "{text}"
    );

    create(&httpsos, &httpso("web", "web.example.com")).await;
    wait_for(
        &httpsos,
        "web",
        "reconciled by the leader",
        httpso_ready("True", "Reconciled", 1),
    )
    .await;
    assert!(a.metrics.reconcile_count("httpscaledobject") > 0);
    assert_eq!(
        b.metrics.reconcile_count("httpscaledobject"),
        0,
        "the standby must not reconcile"
    );
    assert_eq!(
        b.metrics.reconcile_count("interceptorroute"),
        0,
        "the standby must not reconcile"
    );
    let (_, text) = http_get(b.metrics_addr.expect("metrics"), "/metrics").await;
    assert!(
        text.contains("leader_election_master_status{name=\"http-add-on.keda.sh\"} 0"),
        "{text}"
    );

    // Kill the leader (no release): the standby takes the Lease once it expires, and works.
    a.kill().await;
    wait_for(&leases, LEASE_NAME, "op-b takes over", held_by("op-b")).await;
    within(
        "patch",
        httpsos.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": {"max": 42}}})),
        ),
    )
    .await
    .expect("patch");
    wait_for(
        &sos,
        "web",
        "new leader reconciles",
        |so: Option<&ScaledObject>| so.is_some_and(|so| so.spec.max_replica_count == Some(42)),
    )
    .await;
    // (Only op-b runs now, so the change above is its work.)
    let lease = within("get lease", leases.get(LEASE_NAME))
        .await
        .expect("lease");
    assert_eq!(
        lease.spec.as_ref().and_then(|s| s.lease_transitions),
        Some(1)
    );

    // A clean stop releases the Lease, so the next candidate need not wait for expiry.
    let c = Running::start(cluster.client.clone(), elected("op-c")).await;
    b.stop().await.expect("clean stop of the leader");
    wait_for(&leases, LEASE_NAME, "op-c takes over", held_by("op-c")).await;
    c.stop().await.expect("clean stop");
    let lease = within("get lease", leases.get(LEASE_NAME))
        .await
        .expect("lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity, None, "released on stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_finds_another_holder_stops() {
    let cluster = Cluster::start().await;
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "keda");
    let a = Running::start(cluster.client.clone(), elected("op-a")).await;
    wait_for(&leases, LEASE_NAME, "op-a leads", held_by("op-a")).await;

    // Someone else writes the Lease (as a partitioned leader's successor would).
    within(
        "steal",
        leases.patch(
            LEASE_NAME,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 3600}}),
            ),
        ),
    )
    .await
    .expect("patch");
    match a.stop_result_when_finished().await {
        Err(Error::LeadershipLost(e)) => assert!(e.to_string().contains("intruder"), "{e}"),
        other => panic!("expected LeadershipLost, got {other:?}"),
    }
}
