//! What the server fills in: generated names, defaults for the kinds that have them, and
//! `managedFields` bookkeeping.

use serde_json::{Value, json};

use super::kinds::ResourceKind;
use super::meta;
use super::write::Subresource;

/// Five characters from the alphabet the real server uses for `generateName`.
pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// Server-side defaults at creation; `status` is dropped for kinds with a status subresource.
/// `cluster_ip` numbers the Service being created.
pub(super) fn apply_defaults(kind: &ResourceKind, body: &mut Value, cluster_ip: u32) {
    if kind.status_subresource
        && let Some(map) = body.as_object_mut()
    {
        map.remove("status");
    }
    match (kind.group.as_str(), kind.plural.as_str()) {
        ("", "namespaces") => meta::set_top(body, "status", Some(json!({"phase": "Active"}))),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            // No controller establishes CRDs here: they are served as soon as they exist.
            let names = body["spec"]["names"].clone();
            let status = json!({
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "lastTransitionTime": meta::now()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "lastTransitionTime": meta::now()},
                ],
                "storedVersions": body["spec"]["versions"]
                    .as_array()
                    .map(|vs| vs.iter()
                        .filter(|v| v["storage"].as_bool() == Some(true))
                        .map(|v| v["name"].clone())
                        .collect::<Vec<_>>())
                    .unwrap_or_default(),
            });
            meta::set_top(body, "status", Some(status));
        }
        ("apps", "deployments") => {
            if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("replicas").or_insert(json!(1));
            }
        }
        ("", "services") => default_service(body, cluster_ip),
        _ => {}
    }
}

/// The defaults a real API server gives a Service: `type: ClusterIP`, a cluster IP from
/// 10.96.0.0/12 (unless headless or ExternalName), `protocol: TCP` and `targetPort = port`.
fn default_service(body: &mut Value, n: u32) {
    let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let service_type = spec
        .entry("type")
        .or_insert(json!("ClusterIP"))
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if service_type != "ExternalName" && spec.get("clusterIP").is_none() {
        let ip = format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff);
        spec.insert("clusterIP".to_owned(), json!(ip));
        spec.insert("clusterIPs".to_owned(), json!([ip]));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            port.entry("protocol").or_insert(json!("TCP"));
            if let Some(number) = port.get("port").cloned() {
                port.entry("targetPort").or_insert(number);
            }
        }
    }
}

/// Records (or refreshes) the `managedFields` entry of `manager` for this operation.
pub(super) fn record_manager(
    body: &mut Value,
    kind: &ResourceKind,
    manager: &str,
    operation: &str,
    sub: Subresource,
) {
    let subresource = match sub {
        Subresource::Main => None,
        Subresource::Status => Some("status"),
        Subresource::Scale => Some("scale"),
    };
    let mut entries: Vec<Value> = body["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries.retain(|e| {
        !(e["manager"].as_str() == Some(manager)
            && e["operation"].as_str() == Some(operation)
            && e["subresource"].as_str() == subresource)
    });
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": kind.api_version(),
        "time": meta::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {},
    });
    if let (Some(s), Some(map)) = (subresource, entry.as_object_mut()) {
        map.insert("subresource".to_owned(), json!(s));
    }
    entries.push(entry);
    meta::set(body, "managedFields", Some(Value::Array(entries)));
}
