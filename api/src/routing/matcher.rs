//! The plain definition of "this request matches this routing rule". Every part of a rule that
//! is empty matches everything; otherwise hosts are OR-ed, paths are OR-ed, headers AND-ed:
//!
//! - hosts: [`HostPattern::matches`] on the request host normalised by [`normalise_host`]
//!   (ports ignored, case-insensitive);
//! - paths: [`path_has_prefix`] (segment-aware prefixes, the root matches everything);
//! - headers: [`HeaderMatcher::matches`] for each (an invalid name never matches).
//!
//! It is linear and allocates; the interceptor's routing index is the fast form of the same
//! rules (and is tested against this one).

use http::HeaderMap;

use super::header::HeaderMatcher;
use super::host::{HostPattern, normalise_host};
use super::path::{path_has_prefix, path_prefix};
use crate::interceptor_route::RoutingRule;

/// Whether a request (`host` as received, a port allowed; `path`; `headers`) matches `rule`.
pub fn rule_matches(rule: &RoutingRule, host: &str, path: &str, headers: &HeaderMap) -> bool {
    let host = normalise_host(host);
    let host_ok = rule.hosts.is_empty()
        || rule
            .hosts
            .iter()
            .any(|h| HostPattern::parse(h).matches(&host));
    let path_ok = rule.paths.is_empty()
        || rule
            .paths
            .iter()
            .any(|p| path_has_prefix(path, path_prefix(&p.value)));
    let headers_ok = rule
        .headers
        .iter()
        .all(|m| HeaderMatcher::compile(m).is_some_and(|matcher| matcher.matches(headers)));
    host_ok && path_ok && headers_ok
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::routing::builders::rule;

    fn hdrs(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(*n, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn empty_rule_matches_everything() {
        assert!(rule_matches(&rule(&[], &[], &[]), "any", "/x", &hdrs(&[])));
    }

    #[test]
    fn hosts_paths_and_headers() {
        let r = rule(
            &["app.example.com", "*.apps.example.com"],
            &["/api", "/v2/"],
            &[("X-Env", Some("prod")), ("x-trace", None)],
        );
        let good = hdrs(&[("x-env", "prod"), ("x-trace", "1")]);
        assert!(rule_matches(&r, "App.Example.com:8080", "/api/x", &good));
        assert!(rule_matches(&r, "a.b.apps.example.com", "/v2", &good));
        assert!(!rule_matches(&r, "apps.example.com", "/api", &good), "apex");
        assert!(!rule_matches(&r, "app.example.com", "/apiv2", &good));
        assert!(!rule_matches(
            &r,
            "app.example.com",
            "/api",
            &hdrs(&[("x-env", "prod")])
        ));
        assert!(!rule_matches(
            &r,
            "app.example.com",
            "/api",
            &hdrs(&[("x-env", "Prod"), ("x-trace", "1")])
        ));
    }

    #[test]
    fn ipv6_and_odd_hosts() {
        let r = rule(&["::1"], &[], &[]);
        assert!(rule_matches(&r, "[::1]:8080", "/", &hdrs(&[])));
        assert!(rule_matches(&r, "[::1]", "/", &hdrs(&[])));
        let r = rule(&["example.com:abc"], &[], &[]);
        assert!(!rule_matches(&r, "example.com", "/", &hdrs(&[])));
        let r = rule(&["EXAMPLE.com."], &[], &[]);
        assert!(rule_matches(&r, "example.com", "/", &hdrs(&[])));
    }

    #[test]
    fn invalid_header_names_never_match() {
        let r = rule(&[], &[], &[("bad name", None)]);
        assert!(!rule_matches(&r, "a", "/", &hdrs(&[])));
    }
}
