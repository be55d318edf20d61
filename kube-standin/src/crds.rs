//! Third-party CRDs a cluster running the add-on has, as the stand-in serves them; apply
//! them with [`LocalApiServer::apply_manifests`](crate::LocalApiServer::apply_manifests) or
//! through the API like any manifest.

/// KEDA's ScaledObject CRD (`keda.sh/v1alpha1`) with the constraints KEDA's own CRD
/// enforces: `scaleTargetRef.name` required (at least one character), `triggers` required,
/// and `minReplicaCount <= maxReplicaCount` with `maxReplicaCount` defaulting to 100 (a CEL
/// rule). Unlisted fields under `advanced`, `fallback` and `status` are kept as sent.
pub const KEDA_SCALED_OBJECT_CRD: &str = include_str!("../manifests/keda-scaledobject-crd.yaml");
