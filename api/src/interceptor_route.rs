//! `InterceptorRoute` (`http.keda.sh/v1beta1`): how the interceptor routes to a target
//! Service and how the scaler measures it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cel::{
    BODY_XOR_MESSAGE, BODY_XOR_RULE, COLD_START_MESSAGE, COLD_START_RULE, MAX_BODY_LENGTH,
    OVERFLOW_PLACEHOLDER_MESSAGE, OVERFLOW_PLACEHOLDER_RULE, PORT_XOR_MESSAGE, PORT_XOR_RULE,
    SCALING_METRIC_MESSAGE, SCALING_METRIC_RULE,
};
use crate::duration::GoDuration;

/// The desired routing and scaling of one target Service.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "http.keda.sh",
    version = "v1beta1",
    kind = "InterceptorRoute",
    plural = "interceptorroutes",
    namespaced,
    status = "InterceptorRouteStatus",
    doc = "InterceptorRoute configures how the interceptor routes requests to a target Service and how the scaler measures them.",
    printcolumn = r#"{"name":"TargetService","type":"string","jsonPath":".spec.target.service"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorRouteSpec {
    /// The Service requests are forwarded to.
    pub target: TargetRef,
    /// Routing rules, OR-ed. A route without rules receives no traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub rules: Vec<RoutingRule>,
    /// What the scaler reports for this route.
    pub scaling_metric: ScalingMetric,
    /// What happens while the target has no ready endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<ColdStart>,
    /// Per-route timeouts; unset fields fall back to the interceptor's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
    /// Responses answered by the interceptor itself, checked in order before counting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub static_routes: Vec<StaticRoute>,
}

/// A Service in the route's namespace, with exactly one of `port` and `portName`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": PORT_XOR_RULE, "message": PORT_XOR_MESSAGE}]))]
pub struct TargetRef {
    /// Service name.
    #[schemars(length(min = 1))]
    pub service: String,
    /// Service port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "maximum" = 65535))]
    pub port: Option<i32>,
    /// Service port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub port_name: Option<String>,
}

/// One routing rule: hosts × paths, all headers must match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingRule {
    /// Exact hosts, `*.suffix` wildcards, or `*` / empty for any host. Empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub hosts: Vec<String>,
    /// Path prefixes, matched on segment boundaries. Empty means `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub paths: Vec<PathMatch>,
    /// Header matchers, AND-ed; at most one per name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub headers: Vec<HeaderMatch>,
}

/// A path prefix.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PathMatch {
    /// The prefix, e.g. `/api/v1`.
    #[schemars(length(min = 1))]
    pub value: String,
}

/// A header matcher: presence only when `value` is absent, otherwise an exact value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    #[schemars(length(min = 1))]
    pub name: String,
    /// Exact, case-sensitive value; absent means "header present".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The metrics the scaler reports; at least one must be set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": SCALING_METRIC_RULE, "message": SCALING_METRIC_MESSAGE}]))]
pub struct ScalingMetric {
    /// Scale on in-flight requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyMetric>,
    /// Scale on requests per granularity bucket over a sliding window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<RequestRateMetric>,
}

/// Concurrency target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyMetric {
    /// In-flight requests per replica.
    #[schemars(extend("minimum" = 1))]
    pub target_value: i32,
}

/// Request-rate target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRateMetric {
    /// Requests per granularity bucket per replica.
    #[schemars(extend("minimum" = 1))]
    pub target_value: i32,
    /// Sliding window (default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "1m"))]
    pub window: Option<GoDuration>,
    /// Bucket size (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "1s"))]
    pub granularity: Option<GoDuration>,
}

impl RequestRateMetric {
    /// The window, with the CRD default of one minute.
    pub fn window_or_default(&self) -> std::time::Duration {
        self.window
            .map_or(std::time::Duration::from_secs(60), GoDuration::as_duration)
    }

    /// The granularity, with the CRD default of one second.
    pub fn granularity_or_default(&self) -> std::time::Duration {
        self.granularity
            .map_or(std::time::Duration::from_secs(1), GoDuration::as_duration)
    }
}

/// Cold-start behaviour.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": COLD_START_RULE, "message": COLD_START_MESSAGE},
    {"rule": OVERFLOW_PLACEHOLDER_RULE, "message": OVERFLOW_PLACEHOLDER_MESSAGE},
]))]
pub struct ColdStart {
    /// Where to send requests when the target does not become ready in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// What to answer at once while the target has no ready endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<Placeholder>,
    /// How many requests this route may hold while cold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1))]
    pub max_pending_requests: Option<i32>,
    /// What to do with requests beyond `maxPendingRequests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<Overflow>,
}

/// Fallback target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Fallback {
    /// The fallback Service.
    pub service: ServiceRef,
}

/// A Service by name with exactly one of `port` and `portName`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": PORT_XOR_RULE, "message": PORT_XOR_MESSAGE}]))]
pub struct ServiceRef {
    /// Service name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "maximum" = 65535))]
    pub port: Option<i32>,
    /// Port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub port_name: Option<String>,
}

/// Placeholder served while cold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Placeholder {
    /// The response.
    pub response: StaticResponse,
}

/// Overflow policy when the hold queue is full.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Overflow {
    /// Answer 503 with `Retry-After`.
    Reject,
    /// Answer with the placeholder.
    Placeholder,
}

/// A response the interceptor answers itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": BODY_XOR_RULE, "message": BODY_XOR_MESSAGE}]))]
pub struct StaticResponse {
    /// Status code (placeholder default 503, static route default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 100, "maximum" = 599))]
    pub status_code: Option<i32>,
    /// Inline body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = MAX_BODY_LENGTH))]
    pub body: Option<String>,
    /// Body from a ConfigMap labelled `http.keda.sh/response-body: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_from_config_map: Option<ConfigMapBodyRef>,
    /// Response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// A ConfigMap key holding a body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ConfigMapBodyRef {
    /// ConfigMap name (same namespace).
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key; when absent the request path (without the leading `/`, `index.html` for `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Per-route timeouts (`0s` disables one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTimeouts {
    /// Cold-start wait bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<GoDuration>,
    /// Total request deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<GoDuration>,
    /// Time to the upstream's response headers, excluding the cold-start wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header: Option<GoDuration>,
}

/// A static route: first match wins, never counted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticRoute {
    /// Rules, OR-ed (at least one).
    #[schemars(length(min = 1))]
    pub rules: Vec<RoutingRule>,
    /// The response.
    pub response: StaticResponse,
    /// When to answer (default `WhenUnavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "WhenUnavailable"))]
    pub response_mode: Option<ResponseMode>,
}

/// When a static route answers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ResponseMode {
    /// Always answer from the interceptor.
    Always,
    /// Answer only while the target has no ready endpoints; forward otherwise.
    #[default]
    WhenUnavailable,
}

/// Observed state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct InterceptorRouteStatus {
    /// Conditions; `Ready` is the one we set.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::conditions::lenient"
    )]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
