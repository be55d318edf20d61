//! The `keda-http-operator` binary: bad settings exit 64 with one line naming the setting;
//! `--help` documents the variables; a real run against the local API server (through
//! KUBECONFIG, with `--leader-elect`) reconciles, and SIGTERM releases the Lease and exits 0.

mod common;

use std::process::Stdio;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_keda-http-operator");

async fn run_to_end(cmd: &mut Command) -> std::process::Output {
    within(
        "binary exits",
        cmd.stdin(Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .expect("binary runs")
}

/// Flags, environment, and what the one stderr line must contain.
type Case = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test]
async fn invalid_settings_exit_64_with_one_line() {
    let cases: [Case; 5] = [
        (
            &[
                "--metrics-secure",
                "--metrics-cert-dir=/nonexistent",
                "--metrics-bind-address=127.0.0.1:0",
            ],
            &[
                ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "s"),
                ("KUBECONFIG", "/nonexistent/kubeconfig"),
            ],
            "--metrics-cert-dir: /nonexistent/tls.crt",
        ),
        (
            &[],
            &[],
            "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE must be set",
        ),
        (
            &[],
            &[
                ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "s"),
                ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT", "nine"),
            ],
            "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT=\"nine\"",
        ),
        (
            &["--health-probe-bind-address=everywhere"],
            &[("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "s")],
            "--health-probe-bind-address",
        ),
        (&["--no-such-flag"], &[], "--no-such-flag"),
    ];
    for (args, env, expected) in cases {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env_clear();
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run_to_end(&mut cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[tokio::test]
async fn help_documents_the_environment() {
    let out = run_to_end(Command::new(BIN).arg("--help").env_clear()).await;
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE",
        "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_PORT",
        "KEDA_HTTP_OPERATOR_LEADER_ELECTION_RETRY_PERIOD",
        "--leader-elect",
        "--zap-log-level",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_against_a_kubeconfig_and_releases_the_lease_on_sigterm() {
    let cluster = Cluster::start().await;
    let mut child = Command::new(BIN)
        .args([
            "--leader-elect",
            "--metrics-bind-address=0",
            "--health-probe-bind-address=0",
            "--zap-encoder=console",
        ])
        .env_clear()
        .env("KUBECONFIG", cluster.server.kubeconfig_path())
        .env(
            "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE",
            "keda-add-ons-http-external-scaler",
        )
        .env("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT", "9090")
        .env("KEDA_HTTP_OPERATOR_NAMESPACE", "keda")
        .env("HOSTNAME", "operator-pod")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");

    let httpsos = cluster.httpsos();
    create(&httpsos, &httpso("bin", "bin.example.com")).await;
    wait_for(
        &httpsos,
        "bin",
        "the binary reconciles",
        httpso_ready("True", "Reconciled", 1),
    )
    .await;
    let so = within("get", cluster.scaled_objects().get("bin"))
        .await
        .expect("ScaledObject");
    assert_eq!(
        so.spec.triggers[0].metadata["scalerAddress"],
        "keda-add-ons-http-external-scaler.keda:9090"
    );
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "keda");
    let lease = within("get", leases.get("http-add-on.keda.sh"))
        .await
        .expect("lease");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.starts_with("operator-pod_"),
        "identity from HOSTNAME: {holder}"
    );

    let pid = child.id().expect("pid").to_string();
    let killed = within("kill", Command::new("kill").args(["-TERM", &pid]).status())
        .await
        .expect("kill runs");
    assert!(killed.success());
    let status = within("exit after SIGTERM", child.wait())
        .await
        .expect("wait");
    assert!(status.success(), "exit status {status:?}");
    let lease = within("get", leases.get("http-add-on.keda.sh"))
        .await
        .expect("lease");
    assert_eq!(lease.spec.and_then(|s| s.holder_identity), None, "released");
}
