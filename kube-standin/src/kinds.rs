//! The resource kinds the server knows: group/version, kind, plural, scope and subresources.
//!
//! Objects are stored untyped, so a kind is only this description. [`KindRegistry::builtin`]
//! holds what our programs and the local cluster use; [`KindRegistry::register`] (reachable
//! through `LocalApiServer::register_kind`) adds more at runtime, like installing a CRD.

use std::collections::BTreeMap;

/// One served resource (one group/version/plural).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group, "" for core.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Plural resource name used in URLs, e.g. `deployments`.
    pub plural: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the `status` subresource exists (then the main resource ignores `status`
    /// and `/status` ignores everything else).
    pub status_subresource: bool,
    /// Whether the `scale` subresource exists (`spec.replicas`, as for Deployments).
    pub scale_subresource: bool,
}

impl ResourceKind {
    /// A namespaced kind with no subresources.
    pub fn namespaced(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced: true,
            status_subresource: false,
            scale_subresource: false,
        }
    }

    /// A cluster-scoped kind with no subresources.
    pub fn cluster(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Self {
            namespaced: false,
            ..Self::namespaced(group, version, kind, plural)
        }
    }

    /// Adds the `status` subresource.
    #[must_use]
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// Adds the `scale` subresource.
    #[must_use]
    pub fn with_scale(mut self) -> Self {
        self.scale_subresource = true;
        self
    }

    /// `apiVersion` as written in objects: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The key objects of this kind are stored under.
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            group: self.group.clone(),
            version: self.version.clone(),
            plural: self.plural.clone(),
        }
    }
}

/// (group, version, plural): identifies a served resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// API group, "" for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural.
    pub plural: String,
}

/// All served kinds, by (group, version, plural).
#[derive(Debug, Clone, Default)]
pub struct KindRegistry {
    kinds: BTreeMap<ResourceKey, ResourceKind>,
}

impl KindRegistry {
    /// The kinds the issue lists: core Namespaces, Services, ConfigMaps, Secrets, Pods, Events;
    /// apps Deployments (status, scale); EndpointSlices; Leases; events.k8s.io Events;
    /// CustomResourceDefinitions; http.keda.sh InterceptorRoutes and HTTPScaledObjects and
    /// keda.sh ScaledObjects (all with status).
    pub fn builtin() -> Self {
        let mut r = Self::default();
        for kind in [
            ResourceKind::cluster("", "v1", "Namespace", "namespaces").with_status(),
            ResourceKind::namespaced("", "v1", "Service", "services").with_status(),
            ResourceKind::namespaced("", "v1", "ConfigMap", "configmaps"),
            ResourceKind::namespaced("", "v1", "Secret", "secrets"),
            ResourceKind::namespaced("", "v1", "Pod", "pods").with_status(),
            ResourceKind::namespaced("", "v1", "Event", "events"),
            ResourceKind::namespaced("", "v1", "ServiceAccount", "serviceaccounts"),
            ResourceKind::namespaced("apps", "v1", "Deployment", "deployments")
                .with_status()
                .with_scale(),
            ResourceKind::namespaced("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
            ResourceKind::namespaced("coordination.k8s.io", "v1", "Lease", "leases"),
            ResourceKind::namespaced("events.k8s.io", "v1", "Event", "events"),
            ResourceKind::cluster(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
            )
            .with_status(),
            ResourceKind::namespaced(
                "http.keda.sh",
                "v1beta1",
                "InterceptorRoute",
                "interceptorroutes",
            )
            .with_status(),
            ResourceKind::namespaced(
                "http.keda.sh",
                "v1alpha1",
                "HTTPScaledObject",
                "httpscaledobjects",
            )
            .with_status(),
            ResourceKind::namespaced("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
                .with_status(),
        ] {
            r.register(kind);
        }
        r
    }

    /// Adds (or replaces) a kind.
    pub fn register(&mut self, kind: ResourceKind) {
        self.kinds.insert(kind.key(), kind);
    }

    /// Looks a kind up by group, version and plural.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceKind> {
        self.kinds.get(&ResourceKey {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
        })
    }

    /// Looks a kind up by group, version and kind name (as manifests name them).
    pub fn find_kind(&self, group: &str, version: &str, kind: &str) -> Option<&ResourceKind> {
        self.kinds
            .values()
            .find(|k| k.group == group && k.version == version && k.kind == kind)
    }

    /// All kinds, ordered by (group, version, plural).
    pub fn iter(&self) -> impl Iterator<Item = &ResourceKind> {
        self.kinds.values()
    }

    /// The kinds that a CustomResourceDefinition object (apiextensions.k8s.io/v1) declares:
    /// one per served version, with the status/scale subresources it asks for.
    pub fn kinds_from_crd(crd: &serde_json::Value) -> Vec<ResourceKind> {
        let spec = &crd["spec"];
        let (Some(group), Some(kind), Some(plural)) = (
            spec["group"].as_str(),
            spec["names"]["kind"].as_str(),
            spec["names"]["plural"].as_str(),
        ) else {
            return Vec::new();
        };
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        let Some(versions) = spec["versions"].as_array() else {
            return Vec::new();
        };
        versions
            .iter()
            .filter(|v| v["served"].as_bool().unwrap_or(true))
            .filter_map(|v| {
                let version = v["name"].as_str()?;
                let mut k = ResourceKind::namespaced(group, version, kind, plural);
                k.namespaced = namespaced;
                k.status_subresource = v["subresources"]["status"].is_object();
                k.scale_subresource = v["subresources"]["scale"].is_object();
                Some(k)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_has_the_kinds_we_use() {
        let r = KindRegistry::builtin();
        let d = r.get("apps", "v1", "deployments").unwrap();
        assert!(d.status_subresource && d.scale_subresource && d.namespaced);
        assert!(!r.get("", "v1", "namespaces").unwrap().namespaced);
        assert!(
            r.get("http.keda.sh", "v1beta1", "interceptorroutes")
                .unwrap()
                .status_subresource
        );
        assert_eq!(r.get("", "v1", "pods").unwrap().api_version(), "v1");
    }

    #[test]
    fn crd_registration_reads_versions_and_subresources() {
        let crd = serde_json::json!({
            "spec": {"group": "example.com", "scope": "Cluster",
                     "names": {"kind": "Widget", "plural": "widgets"},
                     "versions": [{"name": "v1", "served": true, "subresources": {"status": {}}},
                                  {"name": "v0", "served": false}]}
        });
        let kinds = KindRegistry::kinds_from_crd(&crd);
        assert_eq!(kinds.len(), 1);
        assert!(kinds[0].status_subresource && !kinds[0].namespaced);
        assert_eq!(kinds[0].api_version(), "example.com/v1");
    }
}
