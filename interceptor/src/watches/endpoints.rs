//! Ready endpoints from EndpointSlices and Services: the Kubernetes [`EndpointSource`].
//!
//! Every EndpointSlice labelled `kubernetes.io/service-name` and every Service are mirrored in
//! reflector stores. A [`Target`]'s set is computed from all slices of its Service (a Service
//! may have many: the EndpointSlice controller splits by port set and size, and the local
//! simulator writes one slice per pod, each with its own port), and the Service itself (port
//! number → port name, `appProtocol`). The watch tasks call [`KubeEndpoints::refresh_service`]
//! on every slice or Service event, so a target's receiver changes on the event itself; a
//! request held for a cold start is woken by it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::watch;

use crate::endpoints::{AppProtocol, EndpointSet, EndpointSource, PortLookup, Target, TargetPort};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Ready endpoints per target, computed from the EndpointSlice and Service stores.
pub struct KubeEndpoints {
    slices: Store<EndpointSlice>,
    services: Store<Service>,
    targets: Mutex<HashMap<Target, watch::Sender<Arc<EndpointSet>>>>,
}

impl std::fmt::Debug for KubeEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeEndpoints").finish_non_exhaustive()
    }
}

impl KubeEndpoints {
    /// Endpoints over the given (reflector-fed) stores.
    pub fn new(slices: Store<EndpointSlice>, services: Store<Service>) -> Self {
        Self {
            slices,
            services,
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// Recomputes every watched target of Service `namespace/service` and publishes the ones
    /// that changed.
    pub fn refresh_service(&self, namespace: &str, service: &str) {
        let targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        for (target, tx) in targets.iter() {
            if &*target.namespace == namespace && &*target.service == service {
                publish(tx, self.compute(target));
            }
        }
    }

    /// Recomputes every watched target (after a relist), forgetting targets nobody watches.
    pub fn refresh_all(&self) {
        let mut targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        targets.retain(|_, tx| tx.receiver_count() > 0);
        for (target, tx) in targets.iter() {
            publish(tx, self.compute(target));
        }
    }

    fn compute(&self, target: &Target) -> EndpointSet {
        let service = self
            .services
            .get(&ObjectRef::new(&target.service).within(&target.namespace));
        let slices = self.slices.state_filter(|slice| {
            slice.metadata.namespace.as_deref() == Some(&*target.namespace)
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|s| s.as_str() == &*target.service)
        });
        resolve(target, service.as_deref(), slices.iter().map(|s| &**s))
    }
}

fn publish(tx: &watch::Sender<Arc<EndpointSet>>, set: EndpointSet) {
    tx.send_if_modified(|current| {
        if **current == set {
            false
        } else {
            *current = Arc::new(set);
            true
        }
    });
}

impl EndpointSource for KubeEndpoints {
    fn watch(&self, target: &Target) -> watch::Receiver<Arc<EndpointSet>> {
        let mut targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = targets.get(target) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Arc::new(self.compute(target)));
        targets.insert(target.clone(), tx);
        rx
    }
}

/// The ready set of `target` from its Service (if known) and all of the Service's slices.
///
/// The port: a numeric target port is looked up on the Service and its name used to find the
/// slice port (an unnamed Service port matches an unnamed slice port); a named one is looked up
/// by name. Without a Service, a numeric target takes a slice's only port. An endpoint is ready
/// when `conditions.ready` is true or absent and it is not terminating; its first address is
/// used.
pub fn resolve<'a>(
    target: &Target,
    service: Option<&Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> EndpointSet {
    let service_ports = service
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_deref());
    let service_port = service_ports.and_then(|ports| {
        ports.iter().find(|p| match &target.port {
            TargetPort::Number(n) => p.port == *n,
            TargetPort::Name(name) => p.name.as_deref() == Some(&**name),
        })
    });
    let lookup = match (service, service_port) {
        (None, _) => PortLookup::Unknown,
        (Some(_), None) => PortLookup::Missing,
        (Some(_), Some(p)) => u16::try_from(p.port).map_or(PortLookup::Missing, PortLookup::Port),
    };
    // The slice port name to look for; None: a Service-less numeric target.
    let port_name: Option<&str> = match (&target.port, service_port) {
        (TargetPort::Name(name), _) => Some(name),
        (TargetPort::Number(_), Some(p)) => Some(p.name.as_deref().unwrap_or("")),
        (TargetPort::Number(_), None) => None,
    };
    let mut app_protocol = service_port.and_then(|p| p.app_protocol.as_deref());
    let mut set = EndpointSet {
        service_port: lookup,
        ..EndpointSet::default()
    };
    if lookup == PortLookup::Missing {
        set.app_protocol = AppProtocol::from_app_protocol(app_protocol);
        return set;
    }
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let Some(port) = slice_port(ports, port_name) else {
            continue;
        };
        let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        if app_protocol.is_none() {
            app_protocol = port.app_protocol.as_deref();
        }
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            set.ready.insert(SocketAddr::new(ip, number));
        }
    }
    set.app_protocol = AppProtocol::from_app_protocol(app_protocol);
    set
}

fn slice_port<'a>(ports: &'a [EndpointPort], name: Option<&str>) -> Option<&'a EndpointPort> {
    match name {
        Some(name) => ports
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == name),
        None if ports.len() == 1 => ports.first(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(port: TargetPort) -> Target {
        Target {
            namespace: "ns".into(),
            service: "app".into(),
            port,
        }
    }

    fn service() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "app", "namespace": "ns"},
            "spec": {"ports": [
                {"name": "http", "port": 8080},
                {"name": "h2", "port": 8081, "appProtocol": "kubernetes.io/h2c"}
            ]}
        }))
        .expect("service")
    }

    fn slice(port: u16, ip: &str, conditions: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("app-{port}"), "namespace": "ns",
                         "labels": {SERVICE_NAME_LABEL: "app"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": conditions}],
            "ports": [{"name": "http", "port": port}, {"name": "h2", "port": port + 1000}]
        }))
        .expect("slice")
    }

    #[test]
    fn merges_every_slice_of_the_service_and_maps_the_port() {
        let slices = [
            slice(41000, "127.0.0.1", json!({"ready": true})),
            slice(41001, "127.0.0.1", json!({})),
            slice(41002, "127.0.0.1", json!({"ready": false})),
            slice(
                41003,
                "127.0.0.1",
                json!({"ready": true, "terminating": true}),
            ),
        ];
        let set = resolve(&target(TargetPort::Number(8080)), Some(&service()), &slices);
        let ports: Vec<u16> = set.ready.iter().map(SocketAddr::port).collect();
        assert_eq!(ports, [41000, 41001]);
        assert_eq!(set.service_port, PortLookup::Port(8080));
        assert_eq!(set.app_protocol, AppProtocol::Http1);

        let set = resolve(
            &target(TargetPort::Name("h2".into())),
            Some(&service()),
            &slices,
        );
        let ports: Vec<u16> = set.ready.iter().map(SocketAddr::port).collect();
        assert_eq!(ports, [42000, 42001]);
        assert_eq!(set.app_protocol, AppProtocol::H2c);
        assert_eq!(set.service_port, PortLookup::Port(8081));
    }

    #[test]
    fn unknown_port_name_and_missing_service() {
        let slices = [slice(41000, "127.0.0.1", json!({"ready": true}))];
        let set = resolve(
            &target(TargetPort::Name("nope".into())),
            Some(&service()),
            &slices,
        );
        assert_eq!(set.service_port, PortLookup::Missing);
        assert!(set.ready.is_empty());
        let set = resolve(&target(TargetPort::Name("http".into())), None, &slices);
        assert_eq!(set.service_port, PortLookup::Unknown);
        assert_eq!(set.ready.len(), 1);
        let set = resolve(&target(TargetPort::Number(80)), None, &slices);
        assert!(
            set.ready.is_empty(),
            "two slice ports: ambiguous without a Service"
        );
    }
}
