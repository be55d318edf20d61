//! HTTPScaledObject → InterceptorRoute conversion, for routing only (compat §2.3).

use std::time::Duration;

use crate::duration::GoDuration;
use crate::http_scaled_object::HTTPScaledObjectSpec;
use crate::interceptor_route::{
    ColdStart, ConcurrencyMetric, Fallback, InterceptorRouteSpec, PathMatch, RequestRateMetric,
    RouteTimeouts, RoutingRule, ScalingMetric, ServiceRef, TargetRef,
};

/// Builds the route an HTTPScaledObject stands for: one rule of its hosts, path prefixes and
/// headers; its Service as target; `conditionWait`/`responseHeader` as timeouts when > 0; the
/// failover Service as fallback, whose `timeoutSeconds` (> 0) overrides readiness.
pub fn route_spec_from_httpso(spec: &HTTPScaledObjectSpec) -> InterceptorRouteSpec {
    let positive = |d: Option<GoDuration>| d.filter(|d| !d.as_duration().is_zero());
    let mut timeouts = RouteTimeouts {
        readiness: positive(spec.timeouts.as_ref().and_then(|t| t.condition_wait)),
        request: None,
        response_header: positive(spec.timeouts.as_ref().and_then(|t| t.response_header)),
    };
    let cold_start = spec
        .cold_start_timeout_failover_ref
        .as_ref()
        .map(|failover| {
            if failover.timeout_seconds > 0 {
                timeouts.readiness = Some(GoDuration(Duration::from_secs(
                    u64::try_from(failover.timeout_seconds).unwrap_or_default(),
                )));
            }
            ColdStart {
                fallback: Some(Fallback {
                    service: ServiceRef {
                        name: failover.service.clone(),
                        port: failover.port,
                        port_name: failover.port_name.clone(),
                    },
                }),
                ..ColdStart::default()
            }
        });
    let scaling_metric = spec
        .scaling_metric
        .as_ref()
        .map(|m| ScalingMetric {
            concurrency: m.concurrency.as_ref().map(|c| ConcurrencyMetric {
                target_value: c.target_value,
            }),
            request_rate: m.request_rate.as_ref().map(|r| RequestRateMetric {
                target_value: r.target_value,
                window: r.window,
                granularity: r.granularity,
            }),
        })
        .unwrap_or_default();
    let has_timeouts = timeouts != RouteTimeouts::default();
    InterceptorRouteSpec {
        target: TargetRef {
            service: spec.scale_target_ref.service.clone(),
            port: spec.scale_target_ref.port,
            port_name: spec.scale_target_ref.port_name.clone(),
        },
        rules: vec![RoutingRule {
            hosts: spec.hosts.clone(),
            paths: spec
                .path_prefixes
                .iter()
                .map(|p| PathMatch { value: p.clone() })
                .collect(),
            headers: spec.headers.clone(),
        }],
        scaling_metric,
        cold_start,
        timeouts: has_timeouts.then_some(timeouts),
        static_routes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_scaled_object::{
        ColdStartTimeoutFailoverRef, HttpScaledObjectTimeouts, ScaleTargetRef,
    };

    fn httpso() -> HTTPScaledObjectSpec {
        HTTPScaledObjectSpec {
            hosts: vec!["example.com".into()],
            path_prefixes: vec!["/api".into()],
            headers: vec![],
            scale_target_ref: ScaleTargetRef {
                name: Some("app".into()),
                api_version: None,
                kind: None,
                service: "app-svc".into(),
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
    fn one_rule_from_hosts_paths_headers() {
        let route = route_spec_from_httpso(&httpso());
        assert_eq!(route.target.service, "app-svc");
        assert_eq!(route.target.port, Some(8080));
        assert_eq!(route.rules.len(), 1);
        assert_eq!(route.rules[0].hosts, vec!["example.com".to_string()]);
        assert_eq!(route.rules[0].paths[0].value, "/api");
        assert!(route.timeouts.is_none());
        assert!(route.cold_start.is_none());
    }

    #[test]
    fn failover_timeout_overrides_condition_wait() {
        let mut spec = httpso();
        spec.timeouts = Some(HttpScaledObjectTimeouts {
            condition_wait: Some(GoDuration(Duration::from_secs(5))),
            response_header: Some(GoDuration(Duration::ZERO)),
        });
        spec.cold_start_timeout_failover_ref = Some(ColdStartTimeoutFailoverRef {
            service: "fallback".into(),
            port: None,
            port_name: Some("http".into()),
            timeout_seconds: 12,
        });
        let route = route_spec_from_httpso(&spec);
        let timeouts = route.timeouts.expect("timeouts");
        assert_eq!(
            timeouts.readiness,
            Some(GoDuration(Duration::from_secs(12)))
        );
        assert_eq!(timeouts.response_header, None, "0s is not copied");
        let fallback = route.cold_start.and_then(|c| c.fallback).expect("fallback");
        assert_eq!(fallback.service.name, "fallback");
        assert_eq!(fallback.service.port_name.as_deref(), Some("http"));
    }
}
