//! `HTTPScaledObject` (`http.keda.sh/v1alpha1`, shortName `httpso`): the deprecated but still
//! supported API. The operator turns each into a KEDA `ScaledObject`; the interceptor routes to
//! it as if it were an `InterceptorRoute` (see [`crate::convert`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cel::{HTTPSO_PORT_XOR_MESSAGE, HTTPSO_PORT_XOR_RULE};
use crate::duration::GoDuration;
use crate::interceptor_route::HeaderMatch;

/// Annotation: do not create a ScaledObject (and delete an owned one).
pub const SKIP_SCALEDOBJECT_CREATION_ANNOTATION: &str =
    "httpscaledobject.keda.sh/skip-scaledobject-creation";
/// Annotation: drop the ownerReference from the ScaledObject so it survives deletion.
pub const ORPHAN_SCALEDOBJECT_ANNOTATION: &str = "httpscaledobject.keda.sh/orphan-scaledobject";
/// The operator's finalizer on HTTPScaledObjects.
pub const HTTPSO_FINALIZER: &str = "httpscaledobject.http.keda.sh";

/// The desired routing and scaling of one workload.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "http.keda.sh",
    version = "v1alpha1",
    kind = "HTTPScaledObject",
    plural = "httpscaledobjects",
    shortname = "httpso",
    namespaced,
    status = "HTTPScaledObjectStatus",
    doc = "HTTPScaledObject (deprecated in favour of InterceptorRoute) routes requests to a Service and makes KEDA scale its workload.",
    printcolumn = r#"{"name":"TargetWorkload","type":"string","jsonPath":".status.targetWorkload"}"#,
    printcolumn = r#"{"name":"TargetService","type":"string","jsonPath":".status.targetService"}"#,
    printcolumn = r#"{"name":"MinReplicas","type":"integer","jsonPath":".spec.replicas.min"}"#,
    printcolumn = r#"{"name":"MaxReplicas","type":"integer","jsonPath":".spec.replicas.max"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPScaledObjectSpec {
    /// Hosts; empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefixes; empty means `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_prefixes: Vec<String>,
    /// Header matchers, AND-ed; at most one per name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub headers: Vec<HeaderMatch>,
    /// The workload to scale and the Service to route to.
    pub scale_target_ref: ScaleTargetRef,
    /// Fallback Service used when the target does not become ready in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start_timeout_failover_ref: Option<ColdStartTimeoutFailoverRef>,
    /// Replica bounds copied to the ScaledObject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaBounds>,
    /// Deprecated pending-requests target (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pending_requests: Option<i32>,
    /// Copied to the ScaledObject's `cooldownPeriod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledown_period: Option<i32>,
    /// Copied to the ScaledObject's `initialCooldownPeriod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_cooldown_period: Option<i32>,
    /// The metric the scaler reports (concurrency or request rate, not both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_metric: Option<HttpScalingMetric>,
    /// Timeouts that become the route's readiness and response-header timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpScaledObjectTimeouts>,
}

/// The workload and the Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": HTTPSO_PORT_XOR_RULE, "message": HTTPSO_PORT_XOR_MESSAGE}]))]
pub struct ScaleTargetRef {
    /// Workload name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Workload apiVersion (KEDA default `apps/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Workload kind (KEDA default `Deployment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The Service to route to.
    pub service: String,
    /// Service port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Service port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
}

/// Fallback Service for HTTPScaledObjects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": HTTPSO_PORT_XOR_RULE, "message": HTTPSO_PORT_XOR_MESSAGE}]))]
pub struct ColdStartTimeoutFailoverRef {
    /// Service name.
    pub service: String,
    /// Port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// Readiness timeout in seconds before falling back (default 30).
    #[serde(default = "default_failover_timeout_seconds")]
    pub timeout_seconds: i32,
}

fn default_failover_timeout_seconds() -> i32 {
    30
}

/// Replica bounds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct ReplicaBounds {
    /// Minimum replicas (KEDA default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    /// Maximum replicas (KEDA default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
}

/// HTTPScaledObject scaling metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpScalingMetric {
    /// Scale on in-flight requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<HttpConcurrencyMetric>,
    /// Scale on request rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<HttpRequestRateMetric>,
}

/// Concurrency target (default 100).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpConcurrencyMetric {
    /// In-flight requests per replica.
    #[serde(default = "default_target_value")]
    pub target_value: i32,
}

/// Request-rate target (defaults 100, `1m`, `1s`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestRateMetric {
    /// Requests per granularity bucket per replica.
    #[serde(default = "default_target_value")]
    pub target_value: i32,
    /// Sliding window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "1m"))]
    pub window: Option<GoDuration>,
    /// Bucket size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "1s"))]
    pub granularity: Option<GoDuration>,
}

fn default_target_value() -> i32 {
    100
}

/// HTTPScaledObject timeouts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpScaledObjectTimeouts {
    /// Becomes the route's readiness timeout when > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_wait: Option<GoDuration>,
    /// Becomes the route's response-header timeout when > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header: Option<GoDuration>,
}

/// Observed state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPScaledObjectStatus {
    /// `"<apiVersion>/<kind>/<name>"` of the scaled workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_workload: Option<String>,
    /// `"<service>:<port>"` (port 0 when a port name is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_service: Option<String>,
    /// Conditions; `Ready` is the one we set.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::conditions::lenient"
    )]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
