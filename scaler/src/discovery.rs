//! Interceptor discovery: the current set of interceptor admin addresses.
//!
//! The rest of the scaler sees discovery as a [`watch::Receiver<Interceptors>`]: the latest set
//! of `ip:port` addresses, replaced whole when it changes. Tests and in-process harnesses feed
//! it directly ([`fixed`] or their own `watch::channel`); in a cluster [`watch_endpoint_slices`]
//! fills it from a kube-rs reflector over the EndpointSlices of the interceptor admin Service
//! (label `kubernetes.io/service-name=<service>` in the interceptors' namespace).
//!
//! Which addresses count (compat §4.3): endpoints whose `conditions.ready` is unset or
//! true, deduplicated. The port is the slice's port named like the admin Service port
//! (`admin` by default, `KEDA_HTTP_SCALER_TARGET_ADMIN_PORT_NAME`) when the slice lists one,
//! else `KEDA_HTTP_SCALER_TARGET_ADMIN_PORT`; so pods that share one IP with distinct admin
//! ports (a local cluster on loopback) work as well as ordinary pods. Non-IP addresses (FQDN
//! slices) are skipped.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;

/// The current set of interceptor admin addresses.
pub type Interceptors = Arc<BTreeSet<SocketAddr>>;

/// A discovery channel that always holds `addrs` (and whose sender is returned so that a test
/// can change the set).
pub fn fixed(
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> (watch::Sender<Interceptors>, watch::Receiver<Interceptors>) {
    watch::channel(Arc::new(addrs.into_iter().collect()))
}

/// Where to find the interceptors' admin endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminService {
    /// Namespace of the admin Service.
    pub namespace: String,
    /// Name of the admin Service.
    pub service: String,
    /// Port name looked up in each EndpointSlice.
    pub port_name: String,
    /// Port used when a slice has no port of that name.
    pub port: u16,
}

impl AdminService {
    /// The label selector of the Service's EndpointSlices.
    pub fn label_selector(&self) -> String {
        format!("kubernetes.io/service-name={}", self.service)
    }

    /// The interceptor addresses listed in `slices`.
    pub fn addresses<'a>(
        &self,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> BTreeSet<SocketAddr> {
        let mut out = BTreeSet::new();
        for slice in slices {
            let port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(self.port_name.as_str()))
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(self.port);
            for endpoint in slice.endpoints.iter().flatten() {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        out.insert(SocketAddr::new(ip, port));
                    }
                }
            }
        }
        out
    }
}

/// Watches the admin Service's EndpointSlices (kube's default backoff on errors) and keeps the
/// returned channel up to date. The future drives the watch and never ends; spawn it. The
/// channel holds the empty set until the first list completes.
pub fn watch_endpoint_slices(
    client: Client,
    admin: AdminService,
) -> (
    watch::Receiver<Interceptors>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = watch::channel(Interceptors::default());
    let api: Api<EndpointSlice> = Api::namespaced(client, &admin.namespace);
    let config = watcher::Config::default().labels(&admin.label_selector());
    let (store, stream) = keda_http_runtime::watch::reflect(api, config);
    let drive = async move {
        stream
            .for_each(|event| {
                match event {
                    Ok(_) => publish(&tx, &store, &admin),
                    Err(error) => tracing::warn!(%error, "EndpointSlice watch"),
                }
                std::future::ready(())
            })
            .await;
    };
    (rx, drive)
}

fn publish(tx: &watch::Sender<Interceptors>, store: &Store<EndpointSlice>, admin: &AdminService) {
    let slices = store.state();
    let addrs = admin.addresses(slices.iter().map(AsRef::as_ref));
    tx.send_if_modified(|current| {
        if **current == addrs {
            false
        } else {
            tracing::info!(interceptors = addrs.len(), "interceptor endpoints changed");
            *current = Arc::new(addrs);
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).expect("EndpointSlice")
    }

    fn admin() -> AdminService {
        AdminService {
            namespace: "keda".to_owned(),
            service: "keda-add-ons-http-interceptor-admin".to_owned(),
            port_name: "admin".to_owned(),
            port: 9090,
        }
    }

    #[test]
    fn ready_addresses_with_env_port() {
        let s = slice(serde_json::json!({
            "metadata": {"name": "a"},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"]},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.1"]}
            ],
            "ports": [{"name": "other", "port": 1234}]
        }));
        let got: Vec<String> = admin()
            .addresses([&s])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.0.0.1:9090", "10.0.0.2:9090"]);
        assert_eq!(
            admin().label_selector(),
            "kubernetes.io/service-name=keda-add-ons-http-interceptor-admin"
        );
    }

    #[test]
    fn named_port_in_the_slice_wins() {
        // Two interceptors on loopback, one slice each, distinct admin ports.
        let a = slice(serde_json::json!({
            "metadata": {"name": "a"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"]}],
            "ports": [{"name": "admin", "port": 41001}]
        }));
        let b = slice(serde_json::json!({
            "metadata": {"name": "b"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"]}, {"addresses": ["not-an-ip.example"]}],
            "ports": [{"name": "admin", "port": 41002}]
        }));
        let got: Vec<String> = admin()
            .addresses([&a, &b])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["127.0.0.1:41001", "127.0.0.1:41002"]);
    }
}
