//! Reading `status.conditions` leniently.
//!
//! `metav1.Condition` requires `type`, `status`, `lastTransitionTime`, `reason` and `message`.
//! Objects written by older versions of the official add-on can hold conditions without some
//! of them (its operator drops such entries on its next status write, `MigrateConditions`).
//! A strict decode would make the whole list or watch of that kind fail, so that one old object
//! would hide every route from the interceptor, the scaler and the operator. Instead, entries
//! that are not valid conditions are skipped when reading, exactly the entries the official
//! operator would drop, and the next status write by the operator removes them for good.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::{Deserialize, Deserializer};

/// Deserializes a condition list, skipping entries that are not valid `metav1.Condition`s.
pub(crate) fn lenient<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Condition>, D::Error> {
    let raw = Option::<Vec<serde_json::Value>>::deserialize(deserializer)?.unwrap_or_default();
    Ok(raw
        .into_iter()
        .filter_map(|value| serde_json::from_value(value).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::HTTPScaledObjectStatus;
    use crate::InterceptorRouteStatus;

    #[test]
    fn conditions_without_last_transition_time_are_skipped_not_fatal() {
        let status: HTTPScaledObjectStatus = serde_json::from_value(serde_json::json!({
            "targetService": "svc:8080",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok"},
                {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ]
        }))
        .expect("an old condition does not fail the object");
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.target_service.as_deref(), Some("svc:8080"));

        let route: InterceptorRouteStatus =
            serde_json::from_value(serde_json::json!({"conditions": null})).expect("null list");
        assert!(route.conditions.is_empty());
    }
}
