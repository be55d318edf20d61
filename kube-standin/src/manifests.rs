//! Applying YAML manifests straight into the store, as `kubectl apply --server-side` would:
//! multi-document YAML, `kind: List` documents expanded, CustomResourceDefinitions first
//! registering their kinds so that later documents may use them. Used to seed the local
//! cluster (CRDs, chart output) without going through HTTP.

use serde_json::Value;

use super::error::ApiError;
use super::store::Store;
use super::write::{PatchBody, Subresource, WriteOptions};

/// Applies every object in `yaml` (server-side apply with `field_manager`), in document
/// order; namespaced objects without a namespace go to `default_namespace`. Returns the
/// stored objects. Stops at the first failure.
pub fn apply_manifests(
    store: &Store,
    yaml: &str,
    field_manager: &str,
    default_namespace: &str,
) -> Result<Vec<Value>, ApiError> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml)
        .map_err(|e| ApiError::bad_request(format!("manifest is not valid YAML: {e}")))?;
    let mut objects = Vec::new();
    for document in documents {
        if document.is_null() {
            continue;
        }
        if document["kind"].as_str() == Some("List") {
            if let Some(items) = document["items"].as_array() {
                objects.extend(items.iter().cloned());
            }
        } else {
            objects.push(document);
        }
    }
    let opts = WriteOptions {
        field_manager: Some(field_manager.to_owned()),
        force: true,
        ..WriteOptions::default()
    };
    let mut applied = Vec::with_capacity(objects.len());
    for object in objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind_name = object["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = store.find_kind(group, version, kind_name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no kind \"{kind_name}\" is registered for version \"{api_version}\""
            ))
        })?;
        let name = object["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::invalid(format!("a {kind_name} in the manifest has no name")))?
            .to_owned();
        let namespace = kind.namespaced.then(|| {
            object["metadata"]["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(default_namespace)
                .to_owned()
        });
        applied.push(store.patch(
            &kind,
            namespace.as_deref(),
            &name,
            Subresource::Main,
            PatchBody::Apply(object),
            &opts,
        )?);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_crds_then_their_objects_and_lists() {
        let store = Store::new(64);
        let yaml = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets}
  versions: [{name: v1, served: true, storage: true}]
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
spec: {size: 1}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c, namespace: kube-system}
  data: {k: v}
"#;
        let applied = apply_manifests(&store, yaml, "seed", "default").unwrap();
        assert_eq!(applied.len(), 3);
        assert_eq!(applied[1]["metadata"]["namespace"], "default");
        assert_eq!(applied[2]["metadata"]["namespace"], "kube-system");
        // Applying again is a no-op.
        let again = apply_manifests(&store, yaml, "seed", "default").unwrap();
        assert_eq!(
            again[1]["metadata"]["resourceVersion"],
            applied[1]["metadata"]["resourceVersion"]
        );
        let unknown = "apiVersion: nope/v1\nkind: Thing\nmetadata: {name: x}\n";
        assert_eq!(
            apply_manifests(&store, unknown, "seed", "default")
                .unwrap_err()
                .code,
            400
        );
    }
}
