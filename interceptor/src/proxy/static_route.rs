//! Static routes: which of a route's `staticRoutes` (if any) a request matches (compat §2.1).
//! Matched before counting; what the match leads to (answer or uncounted forward) is decided
//! in the admit phase.

use http::header::{HeaderMap, HeaderName};
use keda_http_api::interceptor_route::{InterceptorRouteSpec, RoutingRule, StaticRoute};

use crate::routing::strip_port;

/// The first static route of `spec` with a rule matching the request (list order).
pub fn static_route<'a>(
    spec: &'a InterceptorRouteSpec,
    host: &str,
    path: &str,
    headers: &HeaderMap,
) -> Option<&'a StaticRoute> {
    spec.static_routes.iter().find(|route| {
        route
            .rules
            .iter()
            .any(|rule| rule_matches(rule, host, path, headers))
    })
}

/// Whether one routing rule matches; empty fields match everything. Hosts: exact
/// (case-insensitive, ports ignored), `*.suffix` (not the apex), `*` or empty. Paths:
/// segment-aware prefixes. Headers: all present, valued ones equal to one of the values.
pub fn rule_matches(rule: &RoutingRule, host: &str, path: &str, headers: &HeaderMap) -> bool {
    let host = strip_port(host);
    let host_ok = rule.hosts.is_empty()
        || rule.hosts.iter().any(|h| {
            let h = strip_port(h);
            if h.is_empty() || h == "*" {
                true
            } else if let Some(suffix) = h.strip_prefix("*.") {
                host.len() > suffix.len() + 1
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            } else {
                h.eq_ignore_ascii_case(host)
            }
        });
    let trimmed = path.trim_matches('/');
    let path_ok = rule.paths.is_empty()
        || rule.paths.iter().any(|p| {
            let prefix = p.value.trim_matches('/');
            prefix.is_empty()
                || trimmed == prefix
                || trimmed
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        });
    let headers_ok = rule.headers.iter().all(|m| {
        let Ok(name) = HeaderName::from_bytes(m.name.as_bytes()) else {
            return false;
        };
        let mut values = headers.get_all(&name).iter().peekable();
        match &m.value {
            None => values.peek().is_some(),
            Some(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
        }
    });
    host_ok && path_ok && headers_ok
}
#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use keda_http_api::interceptor_route::{HeaderMatch, PathMatch};

    use super::*;

    #[test]
    fn rules_match_hosts_paths_and_headers() {
        let rule = RoutingRule {
            hosts: vec!["*.example.com".into(), "exact.org:8080".into()],
            paths: vec![PathMatch {
                value: "/api/".into(),
            }],
            headers: vec![HeaderMatch {
                name: "x-env".into(),
                value: Some("canary".into()),
            }],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-env", HeaderValue::from_static("canary"));
        assert!(rule_matches(&rule, "a.example.com", "/api/v1", &headers));
        assert!(rule_matches(&rule, "EXACT.org", "/api", &headers));
        assert!(!rule_matches(&rule, "example.com", "/api", &headers));
        assert!(!rule_matches(&rule, "a.example.com", "/apis", &headers));
        assert!(!rule_matches(
            &rule,
            "a.example.com",
            "/api",
            &HeaderMap::new()
        ));
        let any = RoutingRule {
            hosts: vec![],
            paths: vec![],
            headers: vec![],
        };
        assert!(rule_matches(&any, "x", "/", &HeaderMap::new()));
    }
}
