//! The ScaledObject an HTTPScaledObject stands for (compat §9), whether KEDA would accept
//! it, and how to tell whether an existing one still matches it.
//!
//! Pure functions: no API calls. The reconciler builds [`desired`], refuses to apply it when
//! [`check`] finds something KEDA's ScaledObject CRD rejects, applies it with server-side
//! apply otherwise, and uses [`needs_apply`] to avoid rewriting an object that already says
//! what we want.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use keda_http_api::http_scaled_object::{
    ORPHAN_SCALEDOBJECT_ANNOTATION, SKIP_SCALEDOBJECT_CREATION_ANNOTATION,
};
use keda_http_api::scaled_object::{AdvancedConfig, ScaleTrigger, ScaledObjectTargetRef};
use keda_http_api::{HTTPScaledObject, ScaledObject, ScaledObjectSpec};
use kube::{Resource, ResourceExt};

/// KEDA's trigger type for a scaler that pushes activity (`StreamIsActive`).
pub const TRIGGER_TYPE: &str = "external-push";
/// Trigger metadata key: the scaler's gRPC address.
pub const SCALER_ADDRESS_KEY: &str = "scalerAddress";
/// Trigger metadata key: the HTTPScaledObject the scaler reports for.
pub const HTTPSO_KEY: &str = "httpScaledObject";
/// `spec.pollingInterval` of every generated ScaledObject.
pub const POLLING_INTERVAL: i32 = 15;

/// Annotations under this prefix are kubectl's bookkeeping about the HTTPScaledObject itself
/// (`kubectl.kubernetes.io/last-applied-configuration`, `.../restartedAt`); they are not
/// copied to the ScaledObject.
pub const KUBECTL_ANNOTATION_PREFIX: &str = "kubectl.kubernetes.io/";
/// The `maxReplicaCount` KEDA uses when a ScaledObject leaves it unset.
pub const KEDA_DEFAULT_MAX_REPLICAS: i32 = 100;

/// Something in a ScaledObject that KEDA's CRD refuses; the message is one sentence for the
/// HTTPScaledObject's `Ready` condition.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSpec {
    /// `minReplicaCount` above `maxReplicaCount`.
    #[error(
        "minReplicaCount {min} (spec.replicas.min) is greater than maxReplicaCount {max} \
         (spec.replicas.max), which KEDA refuses"
    )]
    MinAboveMax {
        /// The minimum.
        min: i32,
        /// The maximum.
        max: i32,
    },
    /// `minReplicaCount` above KEDA's default maximum, `maxReplicaCount` being unset.
    #[error(
        "minReplicaCount {min} (spec.replicas.min) is greater than KEDA's default \
         maxReplicaCount of {max}, which KEDA refuses: set spec.replicas.max"
    )]
    MinAboveDefaultMax {
        /// The minimum.
        min: i32,
        /// KEDA's default maximum.
        max: i32,
    },
    /// No workload name to scale.
    #[error(
        "spec.scaleTargetRef.name is not set, and KEDA refuses a ScaledObject without the \
         name of the workload to scale"
    )]
    MissingTargetName,
    /// No trigger at all.
    #[error("the ScaledObject would have no trigger, which KEDA refuses")]
    NoTriggers,
}

/// Why no ScaledObject could be derived.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DesiredError {
    /// The HTTPScaledObject has no name or uid (not read from the API server).
    #[error("HTTPScaledObject has no {0} (was it read from the API server?)")]
    MissingMetadata(&'static str),
}

/// What the annotations ask the operator to do with the ScaledObject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create or update it (the default).
    Manage,
    /// `skip-scaledobject-creation: "true"`: create none, delete an owned one.
    Skip,
    /// `orphan-scaledobject: "true"`: leave it alone but drop our ownerReference.
    Orphan,
}

/// Reads the skip and orphan annotations (value `"true"`, as the official operator compares).
/// Skip wins when both are set: it is the stronger request.
pub fn mode(httpso: &HTTPScaledObject) -> Mode {
    let set = |key: &str| httpso.annotations().get(key).is_some_and(|v| v == "true");
    if set(SKIP_SCALEDOBJECT_CREATION_ANNOTATION) {
        Mode::Skip
    } else if set(ORPHAN_SCALEDOBJECT_ANNOTATION) {
        Mode::Orphan
    } else {
        Mode::Manage
    }
}

/// The controller ownerReference pointing at `httpso` (`controller` and
/// `blockOwnerDeletion` true).
pub fn owner_reference(httpso: &HTTPScaledObject) -> Result<OwnerReference, DesiredError> {
    let mut owner = httpso
        .controller_owner_ref(&())
        .ok_or(DesiredError::MissingMetadata("name or uid"))?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

/// The ScaledObject for `httpso`: same name and namespace, labels and annotations copied,
/// controlled by it, one `external-push` trigger at `scaler_address`.
pub fn desired(
    httpso: &HTTPScaledObject,
    scaler_address: &str,
) -> Result<ScaledObject, DesiredError> {
    let name = httpso
        .meta()
        .name
        .clone()
        .ok_or(DesiredError::MissingMetadata("name"))?;
    let spec = &httpso.spec;
    let target = &spec.scale_target_ref;
    let replicas = spec.replicas.clone().unwrap_or_default();
    let metadata = BTreeMap::from([
        (SCALER_ADDRESS_KEY.to_owned(), scaler_address.to_owned()),
        (HTTPSO_KEY.to_owned(), name.clone()),
    ]);
    Ok(ScaledObject {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: httpso.meta().namespace.clone(),
            labels: httpso.meta().labels.clone().filter(|m| !m.is_empty()),
            annotations: copied_annotations(httpso),
            owner_references: Some(vec![owner_reference(httpso)?]),
            ..ObjectMeta::default()
        },
        spec: ScaledObjectSpec {
            scale_target_ref: ScaledObjectTargetRef {
                api_version: target.api_version.clone(),
                kind: target.kind.clone(),
                name: target.name.clone().unwrap_or_default(),
                env_source_container_name: None,
            },
            polling_interval: Some(POLLING_INTERVAL),
            cooldown_period: spec.scaledown_period,
            initial_cooldown_period: spec.initial_cooldown_period,
            idle_replica_count: None,
            min_replica_count: replicas.min,
            max_replica_count: replicas.max,
            advanced: Some(AdvancedConfig {
                restore_to_original_replica_count: Some(true),
                horizontal_pod_autoscaler_config: None,
                extra: BTreeMap::new(),
            }),
            triggers: vec![ScaleTrigger {
                type_: TRIGGER_TYPE.to_owned(),
                name: None,
                metadata,
                metric_type: None,
                extra: BTreeMap::new(),
            }],
            extra: BTreeMap::new(),
        },
        status: None,
    })
}

/// The HTTPScaledObject's annotations without kubectl's bookkeeping; `None` when none are
/// left.
fn copied_annotations(httpso: &HTTPScaledObject) -> Option<BTreeMap<String, String>> {
    let kept: BTreeMap<String, String> = httpso
        .annotations()
        .iter()
        .filter(|(key, _)| !key.starts_with(KUBECTL_ANNOTATION_PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// Checks what KEDA's ScaledObject CRD would refuse, so that the operator reports it on the
/// HTTPScaledObject instead of sending a write that fails: `minReplicaCount` above
/// `maxReplicaCount` (0 and [`KEDA_DEFAULT_MAX_REPLICAS`] when unset), an empty
/// `scaleTargetRef.name`, no trigger.
pub fn check(so: &ScaledObject) -> Result<(), InvalidSpec> {
    let spec = &so.spec;
    if spec.scale_target_ref.name.is_empty() {
        return Err(InvalidSpec::MissingTargetName);
    }
    let min = spec.min_replica_count.unwrap_or(0);
    match spec.max_replica_count {
        Some(max) if min > max => return Err(InvalidSpec::MinAboveMax { min, max }),
        None if min > KEDA_DEFAULT_MAX_REPLICAS => {
            return Err(InvalidSpec::MinAboveDefaultMax {
                min,
                max: KEDA_DEFAULT_MAX_REPLICAS,
            });
        }
        _ => {}
    }
    if spec.triggers.is_empty() {
        return Err(InvalidSpec::NoTriggers);
    }
    Ok(())
}

/// Whether `current` differs from `desired` in anything we set: a spec field we own, a label
/// or annotation we copy, or our ownerReference. Fields others added (KEDA's defaults, a
/// `fallback` a user wrote) do not count, so they are never fought over.
pub fn needs_apply(current: &ScaledObject, desired: &ScaledObject) -> bool {
    let (c, d) = (&current.spec, &desired.spec);
    let spec_differs = c.scale_target_ref.api_version != d.scale_target_ref.api_version
        || c.scale_target_ref.kind != d.scale_target_ref.kind
        || c.scale_target_ref.name != d.scale_target_ref.name
        || c.polling_interval != d.polling_interval
        || c.cooldown_period != d.cooldown_period
        || c.initial_cooldown_period != d.initial_cooldown_period
        || c.min_replica_count != d.min_replica_count
        || c.max_replica_count != d.max_replica_count
        || c.advanced
            .as_ref()
            .and_then(|a| a.restore_to_original_replica_count)
            != d.advanced
                .as_ref()
                .and_then(|a| a.restore_to_original_replica_count)
        || !triggers_match(&c.triggers, &d.triggers);
    let contains = |have: &Option<BTreeMap<String, String>>,
                    want: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let owner_missing = desired.owner_references().iter().any(|want| {
        !current
            .owner_references()
            .iter()
            .any(|have| owner_matches(have, want))
    });
    spec_differs
        || !contains(&current.metadata.labels, &desired.metadata.labels)
        || !contains(&current.metadata.annotations, &desired.metadata.annotations)
        || owner_missing
}

fn triggers_match(current: &[ScaleTrigger], desired: &[ScaleTrigger]) -> bool {
    current.len() == desired.len()
        && current
            .iter()
            .zip(desired)
            .all(|(c, d)| c.type_ == d.type_ && c.name == d.name && c.metadata == d.metadata)
}

fn owner_matches(have: &OwnerReference, want: &OwnerReference) -> bool {
    have.uid == want.uid
        && have.controller == want.controller
        && have.block_owner_deletion == want.block_owner_deletion
}

/// Whether `so` carries an ownerReference (controller or not) to the object with `uid`.
pub fn is_owned_by(so: &ScaledObject, uid: &str) -> bool {
    so.owner_references().iter().any(|o| o.uid == uid)
}

#[cfg(test)]
mod tests {
    use keda_http_api::HTTPScaledObjectSpec;
    use keda_http_api::http_scaled_object::{ReplicaBounds, ScaleTargetRef};
    use serde_json::json;

    use super::*;

    pub(crate) fn httpso() -> HTTPScaledObject {
        let mut h = HTTPScaledObject::new(
            "app",
            HTTPScaledObjectSpec {
                hosts: vec!["app.example.com".to_owned()],
                path_prefixes: Vec::new(),
                headers: Vec::new(),
                scale_target_ref: ScaleTargetRef {
                    name: Some("app".to_owned()),
                    api_version: Some("apps/v1".to_owned()),
                    kind: Some("Deployment".to_owned()),
                    service: "app-svc".to_owned(),
                    port: Some(8080),
                    port_name: None,
                },
                cold_start_timeout_failover_ref: None,
                replicas: Some(ReplicaBounds {
                    min: Some(1),
                    max: Some(7),
                }),
                target_pending_requests: None,
                scaledown_period: Some(60),
                initial_cooldown_period: Some(5),
                scaling_metric: None,
                timeouts: None,
            },
        );
        h.metadata.namespace = Some("ns".to_owned());
        h.metadata.uid = Some("uid-1".to_owned());
        h.metadata.labels = Some(BTreeMap::from([("team".to_owned(), "a".to_owned())]));
        h.metadata.annotations = Some(BTreeMap::from([("note".to_owned(), "x".to_owned())]));
        h
    }

    #[test]
    fn desired_matches_reference_section_9_field_by_field() {
        let so = desired(&httpso(), "scaler.keda:9090").unwrap();
        let got = serde_json::to_value(&so).unwrap();
        assert_eq!(
            got,
            json!({
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {
                    "name": "app",
                    "namespace": "ns",
                    "labels": {"team": "a"},
                    "annotations": {"note": "x"},
                    "ownerReferences": [{
                        "apiVersion": "http.keda.sh/v1alpha1",
                        "kind": "HTTPScaledObject",
                        "name": "app",
                        "uid": "uid-1",
                        "controller": true,
                        "blockOwnerDeletion": true
                    }]
                },
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                    "pollingInterval": 15,
                    "cooldownPeriod": 60,
                    "initialCooldownPeriod": 5,
                    "minReplicaCount": 1,
                    "maxReplicaCount": 7,
                    "advanced": {"restoreToOriginalReplicaCount": true},
                    "triggers": [{
                        "type": "external-push",
                        "metadata": {"scalerAddress": "scaler.keda:9090", "httpScaledObject": "app"}
                    }]
                }
            })
        );
    }

    #[test]
    fn unset_bounds_are_left_to_keda_defaults() {
        let mut h = httpso();
        h.spec.replicas = None;
        h.spec.scaledown_period = None;
        h.spec.initial_cooldown_period = None;
        h.metadata.labels = None;
        h.metadata.annotations = None;
        let spec = serde_json::to_value(desired(&h, "s.n:1").unwrap()).unwrap();
        for absent in [
            "minReplicaCount",
            "maxReplicaCount",
            "cooldownPeriod",
            "initialCooldownPeriod",
        ] {
            assert!(
                spec["spec"].get(absent).is_none(),
                "{absent} should be unset"
            );
        }
        assert!(spec["metadata"].get("labels").is_none());
    }

    #[test]
    fn needs_apply_sees_our_fields_and_ignores_additions() {
        let d = desired(&httpso(), "s.n:1").unwrap();
        let mut current = d.clone();
        assert!(!needs_apply(&current, &d));

        current
            .spec
            .extra
            .insert("fallback".to_owned(), json!({"replicas": 2}));
        current
            .metadata
            .labels
            .get_or_insert_default()
            .insert("keda".to_owned(), "y".to_owned());
        current.metadata.resource_version = Some("7".to_owned());
        assert!(
            !needs_apply(&current, &d),
            "additions by others are not ours to revert"
        );

        let mut edited = current.clone();
        edited.spec.max_replica_count = Some(99);
        assert!(needs_apply(&edited, &d));
        let mut edited = current.clone();
        edited.spec.triggers[0]
            .metadata
            .insert(HTTPSO_KEY.to_owned(), "other".to_owned());
        assert!(needs_apply(&edited, &d));
        let mut edited = current.clone();
        edited.metadata.owner_references = None;
        assert!(needs_apply(&edited, &d));
        let mut edited = current.clone();
        edited.metadata.annotations = None;
        assert!(needs_apply(&edited, &d));
        let mut edited = current;
        edited.spec.polling_interval = None;
        assert!(needs_apply(&edited, &d));
    }

    #[test]
    fn annotations_select_the_mode() {
        let mut h = httpso();
        assert_eq!(mode(&h), Mode::Manage);
        h.annotations_mut()
            .insert(ORPHAN_SCALEDOBJECT_ANNOTATION.to_owned(), "true".to_owned());
        assert_eq!(mode(&h), Mode::Orphan);
        h.annotations_mut().insert(
            SKIP_SCALEDOBJECT_CREATION_ANNOTATION.to_owned(),
            "true".to_owned(),
        );
        assert_eq!(mode(&h), Mode::Skip);
        h.annotations_mut().insert(
            SKIP_SCALEDOBJECT_CREATION_ANNOTATION.to_owned(),
            "false".to_owned(),
        );
        assert_eq!(mode(&h), Mode::Orphan);
    }

    #[test]
    fn kubectl_annotations_are_not_copied() {
        let mut h = httpso();
        h.annotations_mut().insert(
            "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
            "{}".to_owned(),
        );
        h.annotations_mut().insert(
            "kubectl.kubernetes.io/restartedAt".to_owned(),
            "now".to_owned(),
        );
        let so = desired(&h, "s.n:1").unwrap();
        assert_eq!(
            so.metadata.annotations,
            Some(BTreeMap::from([("note".to_owned(), "x".to_owned())]))
        );
        h.metadata.annotations = Some(BTreeMap::from([(
            "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
            "{}".to_owned(),
        )]));
        assert_eq!(desired(&h, "s.n:1").unwrap().metadata.annotations, None);
    }

    #[test]
    fn check_finds_what_keda_refuses() {
        let so = |f: &dyn Fn(&mut HTTPScaledObject)| {
            let mut h = httpso();
            f(&mut h);
            check(&desired(&h, "s.n:1").unwrap())
        };
        assert_eq!(so(&|_| {}), Ok(()));
        assert_eq!(
            so(&|h| h.spec.replicas = Some(ReplicaBounds {
                min: Some(5),
                max: Some(2)
            })),
            Err(InvalidSpec::MinAboveMax { min: 5, max: 2 })
        );
        assert_eq!(
            so(&|h| h.spec.replicas = Some(ReplicaBounds {
                min: Some(3),
                max: Some(3)
            })),
            Ok(())
        );
        assert_eq!(
            so(&|h| h.spec.replicas = Some(ReplicaBounds {
                min: Some(101),
                max: None
            })),
            Err(InvalidSpec::MinAboveDefaultMax { min: 101, max: 100 })
        );
        assert_eq!(
            so(&|h| h.spec.replicas = Some(ReplicaBounds {
                min: Some(100),
                max: None
            })),
            Ok(())
        );
        assert_eq!(
            so(&|h| h.spec.replicas = Some(ReplicaBounds {
                min: None,
                max: Some(-1)
            })),
            Err(InvalidSpec::MinAboveMax { min: 0, max: -1 })
        );
        assert_eq!(
            so(&|h| h.spec.scale_target_ref.name = None),
            Err(InvalidSpec::MissingTargetName)
        );
        assert_eq!(
            so(&|h| h.spec.scale_target_ref.name = Some(String::new())),
            Err(InvalidSpec::MissingTargetName)
        );
        let mut no_trigger = desired(&httpso(), "s.n:1").unwrap();
        no_trigger.spec.triggers.clear();
        assert_eq!(check(&no_trigger), Err(InvalidSpec::NoTriggers));
    }

    #[test]
    fn invalid_spec_messages_are_one_plain_sentence() {
        for invalid in [
            InvalidSpec::MinAboveMax { min: 5, max: 2 },
            InvalidSpec::MinAboveDefaultMax { min: 101, max: 100 },
            InvalidSpec::MissingTargetName,
            InvalidSpec::NoTriggers,
        ] {
            let message = invalid.to_string();
            assert!(!message.contains(". "), "one sentence: {message}");
            assert!(
                !message.contains('{') && !message.contains("  "),
                "{message}"
            );
        }
        assert_eq!(
            InvalidSpec::MinAboveMax { min: 5, max: 2 }.to_string(),
            "minReplicaCount 5 (spec.replicas.min) is greater than maxReplicaCount 2 \
             (spec.replicas.max), which KEDA refuses"
        );
    }

    /// Every HTTPScaledObject the api crate's fixtures call valid derives a ScaledObject KEDA
    /// accepts.
    #[test]
    fn valid_fixtures_derive_scaled_objects_keda_accepts() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/tests/manifests/valid");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            if !text.lines().any(|line| line == "kind: HTTPScaledObject") {
                continue;
            }
            let mut h: HTTPScaledObject = keda_http_api::validation::from_yaml(&text).unwrap();
            h.metadata.uid = Some("uid".to_owned());
            let so = desired(&h, "s.n:1").unwrap();
            assert_eq!(check(&so), Ok(()), "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 4, "HTTPScaledObject fixtures found: {seen}");
    }

    #[test]
    fn ownership_is_by_uid() {
        let so = desired(&httpso(), "s.n:1").unwrap();
        assert!(is_owned_by(&so, "uid-1"));
        assert!(!is_owned_by(&so, "uid-2"));
        let mut h = httpso();
        h.metadata.uid = None;
        assert!(desired(&h, "s.n:1").is_err());
    }
}
