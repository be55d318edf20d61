//! The `local-apiserver` binary: starts, applies its seed manifests, writes a kubeconfig
//! that kube-rs can use, serves.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::process::Stdio;

use common::within;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn binary_serves_the_kubeconfig_it_writes() {
    common::bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let manifest = dir.path().join("seed.yaml");
        std::fs::write(
            &manifest,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: seeded}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: seeded}\ndata: {k: v}\n",
        )
        .unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_local-apiserver"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--manifest")
            .arg(&manifest)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        within("the ready line", async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("local API server ready") {
                    return;
                }
            }
            panic!("the server exited before it was ready");
        })
        .await;

        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig).unwrap(),
            &KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let client = Client::try_from(config).unwrap();
        let namespaces: Api<Namespace> = Api::all(client);
        let list = within("a list", namespaces.list(&ListParams::default()))
            .await
            .unwrap();
        assert!(
            list.items
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some("default"))
        );
        let seeded: Api<ConfigMap> = Api::namespaced(namespaces.into_client(), "seeded");
        let cm = within("a get", seeded.get("c")).await.unwrap();
        assert_eq!(cm.data.unwrap()["k"], "v");

        child.kill().await.unwrap();
    })
    .await;
}
