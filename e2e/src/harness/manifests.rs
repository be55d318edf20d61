//! Applying YAML manifests (one or more documents) with server-side apply, resolving each
//! kind through API discovery, as `kubectl apply --server-side` does.

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Api, Client};
use serde_json::Value;

use super::Error;

/// The field manager of the harness's applies.
pub const FIELD_MANAGER: &str = "keda-http-e2e";

/// Parses a multi-document YAML string into JSON objects (empty documents skipped).
pub fn parse_documents(yaml: &str) -> Result<Vec<Value>, Error> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| Error::Manifest(e.to_string()))?;
    Ok(docs
        .into_iter()
        .filter(|d| !d.is_null() && d.as_object().is_some_and(|o| !o.is_empty()))
        .collect())
}

/// The group/version/kind of a document.
pub fn gvk_of(doc: &Value) -> Result<GroupVersionKind, Error> {
    let api_version = doc["apiVersion"]
        .as_str()
        .ok_or_else(|| Error::Manifest("a document has no apiVersion".to_owned()))?;
    let kind = doc["kind"]
        .as_str()
        .ok_or_else(|| Error::Manifest("a document has no kind".to_owned()))?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Ok(GroupVersionKind::gvk(group, version, kind))
}

/// Applies every document of `yaml`; namespaced objects without a namespace go to
/// `default_namespace`. Returns `kind/namespace/name` of each applied object.
pub async fn apply_yaml(
    client: &Client,
    yaml: &str,
    default_namespace: &str,
) -> Result<Vec<String>, Error> {
    let mut applied = Vec::new();
    for doc in parse_documents(yaml)? {
        applied.push(apply_value(client, doc, default_namespace).await?);
    }
    Ok(applied)
}

/// Applies one object.
pub async fn apply_value(
    client: &Client,
    mut doc: Value,
    default_namespace: &str,
) -> Result<String, Error> {
    let gvk = gvk_of(&doc)?;
    let (resource, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|source| Error::Kube {
            what: format!("discovering {}", gvk.kind),
            source,
        })?;
    let name = doc["metadata"]["name"]
        .as_str()
        .ok_or_else(|| Error::Manifest(format!("a {} has no metadata.name", gvk.kind)))?
        .to_owned();
    let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
        let namespace = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or(default_namespace)
            .to_owned();
        doc["metadata"]["namespace"] = Value::String(namespace.clone());
        Api::namespaced_with(client.clone(), &namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&doc))
        .await
        .map_err(|source| Error::Kube {
            what: format!("applying {} {name}", gvk.kind),
            source,
        })?;
    Ok(describe(
        &resource,
        doc["metadata"]["namespace"].as_str(),
        &name,
    ))
}

fn describe(resource: &ApiResource, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{}/{ns}/{name}", resource.kind),
        None => format!("{}/{name}", resource.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_and_empty_ones_are_skipped() {
        let yaml = "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: a\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n";
        let docs = parse_documents(yaml).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            gvk_of(&docs[0]).unwrap(),
            GroupVersionKind::gvk("", "v1", "Service")
        );
        assert_eq!(
            gvk_of(&docs[1]).unwrap(),
            GroupVersionKind::gvk("apps", "v1", "Deployment")
        );
        assert!(gvk_of(&serde_json::json!({"kind": "X"})).is_err());
    }
}
