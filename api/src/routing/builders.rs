//! Small constructors for routing specs and objects, shared by the tests of every crate (they
//! are plain public functions so that other crates' tests can use them without a feature).

use std::sync::Arc;

use kube::api::ObjectMeta;

use super::collect::RouteSource;
use super::kind::RouteKind;
use crate::http_scaled_object::{HTTPScaledObjectSpec, ScaleTargetRef};
use crate::interceptor_route::{
    ConcurrencyMetric, HeaderMatch, InterceptorRouteSpec, PathMatch, RoutingRule, ScalingMetric,
    TargetRef,
};
use crate::{HTTPScaledObject, InterceptorRoute};

/// A rule of hosts × paths with header matchers (`(name, None)` is presence only).
pub fn rule(hosts: &[&str], paths: &[&str], headers: &[(&str, Option<&str>)]) -> RoutingRule {
    RoutingRule {
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        paths: paths
            .iter()
            .map(|p| PathMatch {
                value: (*p).to_owned(),
            })
            .collect(),
        headers: headers
            .iter()
            .map(|(n, v)| HeaderMatch {
                name: (*n).to_owned(),
                value: v.map(str::to_owned),
            })
            .collect(),
    }
}

/// A spec targeting Service `svc` port 80 with `rules` and no scaling metric (so it fails
/// `validate()`; use [`valid_spec`] where that matters).
pub fn spec(rules: Vec<RoutingRule>) -> InterceptorRouteSpec {
    InterceptorRouteSpec {
        target: TargetRef {
            service: "svc".into(),
            port: Some(80),
            port_name: None,
        },
        rules,
        scaling_metric: ScalingMetric::default(),
        cold_start: None,
        timeouts: None,
        static_routes: Vec::new(),
    }
}

/// [`spec`] with a concurrency target of 100, which passes `validate()`.
pub fn valid_spec(rules: Vec<RoutingRule>) -> InterceptorRouteSpec {
    InterceptorRouteSpec {
        scaling_metric: ScalingMetric {
            concurrency: Some(ConcurrencyMetric { target_value: 100 }),
            request_rate: None,
        },
        ..spec(rules)
    }
}

/// An InterceptorRoute `namespace/name` with `spec`.
pub fn interceptor_route(
    namespace: &str,
    name: &str,
    spec: InterceptorRouteSpec,
) -> InterceptorRoute {
    InterceptorRoute {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// An HTTPScaledObject `namespace/name` routing `hosts` × `path_prefixes` to Service
/// `<name>-svc` port 8080 (valid).
pub fn httpso(
    namespace: &str,
    name: &str,
    hosts: &[&str],
    path_prefixes: &[&str],
) -> HTTPScaledObject {
    HTTPScaledObject {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: HTTPScaledObjectSpec {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            path_prefixes: path_prefixes.iter().map(|p| (*p).to_owned()).collect(),
            headers: Vec::new(),
            scale_target_ref: ScaleTargetRef {
                name: Some(name.into()),
                api_version: None,
                kind: None,
                service: format!("{name}-svc"),
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
        },
        status: None,
    }
}

/// A route source (InterceptorRoute kind) `namespace/name` with `spec`, no creation time.
pub fn source(namespace: &str, name: &str, spec: InterceptorRouteSpec) -> RouteSource {
    RouteSource {
        namespace: Arc::from(namespace),
        name: Arc::from(name),
        created: None,
        kind: RouteKind::InterceptorRoute,
        spec,
    }
}
