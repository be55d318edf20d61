//! Pure parts of the simulator: which Services select a Deployment's pods, the EndpointSlices
//! and Deployment status its pods produce, and which pods a scale-down removes.
//!
//! # One EndpointSlice per (Service, pod)
//!
//! Every simulated pod is a process with its own address and port (its test host's
//! 198.51.100.x:8080, or a loopback port with `E2E_LOOPBACK_PODS=1`). An EndpointSlice's
//! ports apply to all of its endpoints, so endpoints with different ports cannot share a
//! slice. The EndpointSlice controller itself groups endpoints by port set, so one slice per
//! pod is what it would produce here too. Each slice carries the label
//! `kubernetes.io/service-name`, one endpoint (the pod's address, conditions
//! ready/serving/terminating, `targetRef` naming the pod) and every port of the Service, by
//! name and protocol, mapped to the pod's one port. Consumers (interceptor, scaler) read every
//! slice of a Service, as they must on a real cluster. Each slice is owned by its Service
//! (`ownerReferences`), so deleting the Service removes its slices.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The `endpointslice.kubernetes.io/managed-by` value of the simulator's slices.
/// (A label value: no `/`, unlike the `endpointslice.kubernetes.io/managed-by` key.)
pub const MANAGED_BY: &str = "simulator.e2e.keda-http";

/// A simulated pod as the slices and status see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    /// Pod name, e.g. `app-3f2a1`.
    pub name: String,
    /// The address its process listens on, once started.
    pub addr: Option<std::net::SocketAddr>,
    /// The readiness probe passes.
    pub ready: bool,
    /// Being scaled down: `SIGTERM` sent or about to be.
    pub terminating: bool,
}

/// Does `service` (same namespace) select pods with `labels`? A Service without a selector
/// selects nothing (its slices are managed by hand).
pub fn selects(service: &Service, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The EndpointSlice name for a (Service, pod) pair.
pub fn slice_name(service: &str, pod: &str) -> String {
    format!("{service}-{pod}")
}

/// The EndpointSlice for one pod of `service`, or `None` while the pod has no port yet.
pub fn endpoint_slice(service: &Service, pod: &PodView) -> Option<Value> {
    let addr = pod.addr?;
    let port = addr.port();
    let service_name = service.metadata.name.clone().unwrap_or_default();
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let ports: Vec<Value> = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let mut v = json!({
                        "port": port,
                        "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                    });
                    if let Some(name) = &p.name {
                        v["name"] = json!(name);
                    } else {
                        v["name"] = json!("");
                    }
                    if let Some(app_protocol) = &p.app_protocol {
                        v["appProtocol"] = json!(app_protocol);
                    }
                    v
                })
                .collect()
        })
        .unwrap_or_default();
    let mut metadata = json!({
        "name": slice_name(&service_name, &pod.name),
        "namespace": namespace,
        "labels": {
            SERVICE_NAME_LABEL: service_name,
            "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
        },
    });
    if let Some(uid) = &service.metadata.uid {
        metadata["ownerReferences"] = json!([{
            "apiVersion": "v1",
            "kind": "Service",
            "name": service_name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
    }
    Some(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": metadata,
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": [addr.ip().to_string()],
            "conditions": {
                // As the EndpointSlice controller: a terminating pod is never ready, but it
                // is serving while its readiness probe still passes.
                "ready": pod.ready && !pod.terminating,
                "serving": pod.ready,
                "terminating": pod.terminating,
            },
            "targetRef": { "kind": "Pod", "name": pod.name, "namespace": namespace },
        }],
        "ports": ports,
    }))
}

/// A Deployment's replica counts from its pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Pods not terminating.
    pub replicas: i32,
    /// Of those, ready.
    pub ready: i32,
}

/// Counts the pods (terminating pods are not replicas).
pub fn counts(pods: &[PodView]) -> Counts {
    let live = pods.iter().filter(|p| !p.terminating);
    let (mut replicas, mut ready) = (0, 0);
    for pod in live {
        replicas += 1;
        if pod.ready {
            ready += 1;
        }
    }
    Counts { replicas, ready }
}

/// The Deployment `status` merge patch for `counts` against `desired`.
pub fn deployment_status(counts: Counts, desired: i32, generation: Option<i64>) -> Value {
    let mut status = json!({
        "replicas": counts.replicas,
        "updatedReplicas": counts.replicas,
        "readyReplicas": counts.ready,
        "availableReplicas": counts.ready,
        "unavailableReplicas": (desired - counts.ready).max(0),
    });
    if let Some(generation) = generation {
        status["observedGeneration"] = json!(generation);
    }
    json!({ "status": status })
}

/// The names of the pods a scale-down to `desired` removes: not-ready pods first, then the
/// newest (pods are given oldest first), as the ReplicaSet controller prefers.
pub fn victims(pods: &[PodView], desired: usize) -> Vec<String> {
    let live: Vec<(usize, &PodView)> = pods
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.terminating)
        .collect();
    let excess = live.len().saturating_sub(desired);
    let mut ranked = live;
    // Not ready before ready; among equals, newest (larger index) first.
    ranked.sort_by_key(|&(i, p)| (p.ready, std::cmp::Reverse(i)));
    ranked
        .into_iter()
        .take(excess)
        .map(|(_, p)| p.name.clone())
        .collect()
}

#[cfg(test)]
mod tests;
