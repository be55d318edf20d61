//! Static routes: which of a route's `staticRoutes` (if any) a request matches (compat §2.1).
//! Matched before counting; what the match leads to (answer or uncounted forward) is decided
//! in the admit phase.

use http::header::HeaderMap;
use keda_http_api::interceptor_route::{InterceptorRouteSpec, StaticRoute};

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

/// Whether one routing rule matches: the one definition in [`keda_http_api::routing`], shared
/// with the routing index and the operator's conflict check.
pub use keda_http_api::routing::rule_matches;

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use keda_http_api::interceptor_route::{HeaderMatch, PathMatch, RoutingRule};

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
