//! Status of HTTPScaledObjects and InterceptorRoutes: the `Ready` condition with reason,
//! message and `observedGeneration`, and the HTTPScaledObject's `targetWorkload` /
//! `targetService` strings (compat §2.2).
//!
//! Pure functions. `lastTransitionTime` changes only when the condition's status flips, so a
//! recomputed status equals the stored one when nothing happened and need not be written.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use keda_http_api::HTTPScaledObjectStatus;
use keda_http_api::http_scaled_object::HTTPScaledObjectSpec;

/// The one condition type we set.
pub const READY: &str = "Ready";

/// HTTPScaledObject: the ScaledObject was applied (official reason and message).
pub const REASON_RECONCILED: &str = "Reconciled";
/// HTTPScaledObject: applying the ScaledObject failed (official reason).
pub const REASON_CREATE_ERROR: &str = "CreateError";
/// HTTPScaledObject: both scaling metrics set; nothing was changed.
pub const REASON_INVALID_SCALING_METRIC: &str = "InvalidScalingMetric";
/// HTTPScaledObject: the ScaledObject it stands for is one KEDA's CRD refuses (min above
/// max, no target name); nothing was applied. HTTPScaledObject and InterceptorRoute: the
/// object fails to decode or validate, so every keda-http program ignores it.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// HTTPScaledObject: the skip annotation is set.
pub const REASON_SCALED_OBJECT_SKIPPED: &str = "ScaledObjectCreationSkipped";
/// HTTPScaledObject: the orphan annotation is set.
pub const REASON_SCALED_OBJECT_ORPHANED: &str = "ScaledObjectOrphaned";
/// InterceptorRoute: the target Service does not exist.
pub const REASON_SERVICE_NOT_FOUND: &str = "ServiceNotFound";
/// InterceptorRoute: another route claims the same host + path + headers.
pub const REASON_ROUTE_CONFLICT: &str = "RouteConflict";

/// A Ready verdict before it becomes a [`Condition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// `True` or `False`.
    pub ready: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl Readiness {
    /// Ready=True.
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: true,
            reason,
            message: message.into(),
        }
    }

    /// Ready=False.
    pub fn not_ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason,
            message: message.into(),
        }
    }
}

/// The Ready condition for `readiness`, keeping the previous `lastTransitionTime` when the
/// status did not flip.
pub fn ready_condition(
    previous: &[Condition],
    readiness: &Readiness,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if readiness.ready { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == READY && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: READY.to_owned(),
        status,
        reason: readiness.reason.to_owned(),
        message: readiness.message.clone(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The one-sentence `InvalidSpec` message for an object skipped because of `reason`.
pub fn invalid_spec_message(reason: &str) -> String {
    let reason = reason.trim_end_matches('.');
    format!("The object is ignored until it is fixed, because {reason}.")
}

/// The conditions to write on an object skipped because of `reason` (`Ready=False`,
/// `InvalidSpec`), or `None` when `previous` already says so for this generation.
pub fn invalid_spec_conditions(
    previous: &[Condition],
    reason: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<Vec<Condition>> {
    let readiness = Readiness::not_ready(REASON_INVALID_SPEC, invalid_spec_message(reason));
    let conditions = with_condition(
        previous,
        ready_condition(previous, &readiness, generation, now),
    );
    (conditions.as_slice() != previous).then_some(conditions)
}

/// `previous` with its Ready condition replaced by `ready` (others kept in place).
pub fn with_condition(previous: &[Condition], ready: Condition) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|c| c.type_ != ready.type_)
        .cloned()
        .collect();
    out.push(ready);
    out
}

/// `"<apiVersion>/<kind>/<name>"`, empty parts left empty (`//app`), as the official operator.
pub fn target_workload(spec: &HTTPScaledObjectSpec) -> String {
    let t = &spec.scale_target_ref;
    format!(
        "{}/{}/{}",
        t.api_version.as_deref().unwrap_or_default(),
        t.kind.as_deref().unwrap_or_default(),
        t.name.as_deref().unwrap_or_default()
    )
}

/// `"<service>:<port>"`, port 0 when the port is given by name.
pub fn target_service(spec: &HTTPScaledObjectSpec) -> String {
    let t = &spec.scale_target_ref;
    format!("{}:{}", t.service, t.port.unwrap_or(0))
}

/// The full HTTPScaledObject status for a verdict.
pub fn httpso_status(
    spec: &HTTPScaledObjectSpec,
    previous: Option<&HTTPScaledObjectStatus>,
    readiness: &Readiness,
    generation: Option<i64>,
    now: Timestamp,
) -> HTTPScaledObjectStatus {
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ready = ready_condition(previous_conditions, readiness, generation, now);
    HTTPScaledObjectStatus {
        target_workload: Some(target_workload(spec)),
        target_service: Some(target_service(spec)),
        conditions: with_condition(previous_conditions, ready),
    }
}

/// Whether both scaling metrics are set, which the HTTPScaledObject API forbids.
pub fn both_metrics_set(spec: &HTTPScaledObjectSpec) -> bool {
    spec.scaling_metric
        .as_ref()
        .is_some_and(|m| m.concurrency.is_some() && m.request_rate.is_some())
}

#[cfg(test)]
mod tests {
    use keda_http_api::http_scaled_object::{
        HttpConcurrencyMetric, HttpRequestRateMetric, HttpScalingMetric, ScaleTargetRef,
    };

    use super::*;

    fn spec() -> HTTPScaledObjectSpec {
        HTTPScaledObjectSpec {
            hosts: Vec::new(),
            path_prefixes: Vec::new(),
            headers: Vec::new(),
            scale_target_ref: ScaleTargetRef {
                name: Some("app".to_owned()),
                api_version: Some("apps/v1".to_owned()),
                kind: Some("Deployment".to_owned()),
                service: "svc".to_owned(),
                port: Some(8080),
                port_name: None,
            },
            cold_start_timeout_failover_ref: None,
            replicas: None,
            target_pending_requests: None,
            scaledown_period: None,
            initial_cooldown_period: None,
            scaling_metric: None,
            timeouts: None,
        }
    }

    #[test]
    fn target_strings_follow_the_reference() {
        let mut s = spec();
        assert_eq!(target_workload(&s), "apps/v1/Deployment/app");
        assert_eq!(target_service(&s), "svc:8080");
        s.scale_target_ref.api_version = None;
        s.scale_target_ref.kind = None;
        s.scale_target_ref.port = None;
        s.scale_target_ref.port_name = Some("http".to_owned());
        assert_eq!(target_workload(&s), "//app");
        assert_eq!(target_service(&s), "svc:0");
    }

    #[test]
    fn transition_time_changes_only_on_flip() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let ok = Readiness::ready(REASON_RECONCILED, "fine");
        let first = httpso_status(&spec(), None, &ok, Some(1), t0);
        assert_eq!(first.conditions.len(), 1);
        assert_eq!(first.conditions[0].last_transition_time, Time(t0));
        assert_eq!(first.conditions[0].observed_generation, Some(1));

        let again = httpso_status(&spec(), Some(&first), &ok, Some(1), t1);
        assert_eq!(again, first, "nothing changed, nothing to write");

        let newer = httpso_status(&spec(), Some(&first), &ok, Some(2), t1);
        assert_eq!(newer.conditions[0].last_transition_time, Time(t0));
        assert_eq!(newer.conditions[0].observed_generation, Some(2));

        let bad = Readiness::not_ready(REASON_CREATE_ERROR, "boom");
        let flipped = httpso_status(&spec(), Some(&newer), &bad, Some(2), t1);
        assert_eq!(flipped.conditions[0].status, "False");
        assert_eq!(flipped.conditions[0].reason, "CreateError");
        assert_eq!(flipped.conditions[0].last_transition_time, Time(t1));
    }

    #[test]
    fn invalid_spec_is_written_once_per_generation() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let reason = "spec.timeouts.request: invalid duration \"99999999999999999999h\"";
        let first = invalid_spec_conditions(&[], reason, Some(3), t0).expect("new condition");
        assert_eq!(first.len(), 1);
        let ready = &first[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", REASON_INVALID_SPEC)
        );
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(
            ready.message,
            "The object is ignored until it is fixed, because spec.timeouts.request: invalid \
             duration \"99999999999999999999h\"."
        );
        assert_eq!(invalid_spec_conditions(&first, reason, Some(3), t0), None);
        assert!(invalid_spec_conditions(&first, reason, Some(4), t0).is_some());
    }

    #[test]
    fn other_conditions_are_kept() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let other = Condition {
            type_: "Custom".to_owned(),
            status: "True".to_owned(),
            reason: "X".to_owned(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(t0),
        };
        let ready = ready_condition(&[], &Readiness::ready(REASON_RECONCILED, "m"), None, t0);
        let merged = with_condition(std::slice::from_ref(&other), ready.clone());
        assert_eq!(merged, vec![other, ready]);
    }

    #[test]
    fn both_metrics_is_detected() {
        let mut s = spec();
        assert!(!both_metrics_set(&s));
        s.scaling_metric = Some(HttpScalingMetric {
            concurrency: Some(HttpConcurrencyMetric { target_value: 10 }),
            request_rate: None,
        });
        assert!(!both_metrics_set(&s));
        s.scaling_metric.as_mut().unwrap().request_rate = Some(HttpRequestRateMetric {
            target_value: 5,
            window: None,
            granularity: None,
        });
        assert!(both_metrics_set(&s));
    }
}
