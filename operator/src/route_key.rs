//! Route keys (host + path prefix + header set) and conflict detection between routes.
//!
//! Two routes conflict when they claim exactly the same key: the interceptor can send a
//! request for that key to only one of them. Keys are normalised the way the interceptor's
//! routing table reads them (reference §2.1, §3): a port in a host is dropped, `*` and an empty
//! host both mean "any host", leading and trailing `/` of a path are trimmed (so no paths and
//! `/` are both the root), header names compare case-insensitively and header order does not
//! matter. Hosts compare case-insensitively, because our interceptor matches them that way
//! (README "Interceptor: routing"): `Example.com` and `example.com` are one key.

use std::collections::BTreeSet;
use std::fmt;

use keda_http_api::interceptor_route::{HeaderMatch, InterceptorRouteSpec};

/// One routing key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    /// Host without port; empty means any host.
    pub host: String,
    /// Path prefix without leading/trailing `/`; empty means the root.
    pub path: String,
    /// Header matchers: lower-cased name and optional exact value, sorted.
    pub headers: Vec<(String, Option<String>)>,
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.is_empty() {
            "*"
        } else {
            &self.host
        };
        write!(f, "host {host:?}, path \"/{}\"", self.path)?;
        if !self.headers.is_empty() {
            f.write_str(", headers [")?;
            for (i, (name, value)) in self.headers.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                match value {
                    Some(v) => write!(f, "{name}={v:?}")?,
                    None => write!(f, "{name}")?,
                }
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

/// Which object a route comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    /// `http.keda.sh/v1beta1` InterceptorRoute.
    InterceptorRoute,
    /// `http.keda.sh/v1alpha1` HTTPScaledObject.
    HttpScaledObject,
}

/// A route's identity: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteId {
    /// Kind.
    pub kind: RouteKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RouteKind::InterceptorRoute => "InterceptorRoute",
            RouteKind::HttpScaledObject => "HTTPScaledObject",
        };
        write!(f, "{kind} {}/{}", self.namespace, self.name)
    }
}

/// Every key a route spec claims. A spec without rules claims none (it is never routed).
pub fn keys(spec: &InterceptorRouteSpec) -> BTreeSet<RouteKey> {
    let mut out = BTreeSet::new();
    for rule in &spec.rules {
        let headers = normalise_headers(&rule.headers);
        let hosts: Vec<String> = if rule.hosts.is_empty() {
            vec![String::new()]
        } else {
            rule.hosts.iter().map(|h| normalise_host(h)).collect()
        };
        let paths: Vec<String> = if rule.paths.is_empty() {
            vec![String::new()]
        } else {
            rule.paths
                .iter()
                .map(|p| p.value.trim_matches('/').to_owned())
                .collect()
        };
        for host in &hosts {
            for path in &paths {
                out.insert(RouteKey {
                    host: host.clone(),
                    path: path.clone(),
                    headers: headers.clone(),
                });
            }
        }
    }
    out
}

fn normalise_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port or [v6]
        rest.split_once(']').map_or(host, |(ip, _)| ip)
    } else if host.matches(':').count() == 1 {
        host.split_once(':').map_or(host, |(h, _)| h)
    } else {
        host
    };
    if without_port == "*" {
        String::new()
    } else {
        without_port.to_ascii_lowercase()
    }
}

fn normalise_headers(headers: &[HeaderMatch]) -> Vec<(String, Option<String>)> {
    let set: BTreeSet<(String, Option<String>)> = headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
        .collect();
    set.into_iter().collect()
}

/// One conflict: a key this route shares with another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The shared key.
    pub key: RouteKey,
    /// The other route.
    pub other: RouteId,
}

/// The keys `me` shares with any of `others` (itself skipped), sorted by key then route.
pub fn conflicts<'a>(
    me: &RouteId,
    my_keys: &BTreeSet<RouteKey>,
    others: impl IntoIterator<Item = (RouteId, &'a BTreeSet<RouteKey>)>,
) -> Vec<Conflict> {
    let mut out = Vec::new();
    for (other, their_keys) in others {
        if &other == me {
            continue;
        }
        for key in my_keys.intersection(their_keys) {
            out.push(Conflict {
                key: key.clone(),
                other: other.clone(),
            });
        }
    }
    out.sort_by(|a, b| (&a.key, &a.other).cmp(&(&b.key, &b.other)));
    out
}

/// A one-paragraph message naming this route, the first shared key and every route claiming
/// it; further conflicting keys are counted.
pub fn conflict_message(me: &RouteId, conflicts: &[Conflict]) -> Option<String> {
    let first = conflicts.first()?;
    let claimants: Vec<String> = conflicts
        .iter()
        .filter(|c| c.key == first.key)
        .map(|c| c.other.to_string())
        .collect();
    let more = conflicts
        .iter()
        .map(|c| &c.key)
        .collect::<BTreeSet<_>>()
        .len()
        - 1;
    let mut msg = format!(
        "{me} and {} claim the same route ({})",
        claimants.join(", "),
        first.key
    );
    if more > 0 {
        msg.push_str(&format!(" and {more} more shared route key(s)"));
    }
    Some(msg)
}

#[cfg(test)]
mod tests {
    use keda_http_api::interceptor_route::{PathMatch, RoutingRule, ScalingMetric, TargetRef};

    use super::*;

    fn spec(rules: Vec<RoutingRule>) -> InterceptorRouteSpec {
        InterceptorRouteSpec {
            target: TargetRef {
                service: "svc".to_owned(),
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

    fn rule(hosts: &[&str], paths: &[&str], headers: &[(&str, Option<&str>)]) -> RoutingRule {
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

    fn id(kind: RouteKind, name: &str) -> RouteId {
        RouteId {
            kind,
            namespace: "ns".to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn keys_are_normalised() {
        let a = keys(&spec(vec![rule(
            &["a.example:8080"],
            &["/api/"],
            &[("X-Env", Some("p")), ("B", None)],
        )]));
        let b = keys(&spec(vec![rule(
            &["a.example"],
            &["api"],
            &[("b", None), ("x-env", Some("p"))],
        )]));
        assert_eq!(a, b);
        let root = keys(&spec(vec![rule(&["*"], &["/"], &[])]));
        let implicit = keys(&spec(vec![rule(&[], &[], &[])]));
        assert_eq!(root, implicit);
        assert_eq!(keys(&spec(vec![])), BTreeSet::new(), "no rules, no keys");
        let two = keys(&spec(vec![rule(&["a", "b"], &["/x", "/y"], &[])]));
        assert_eq!(two.len(), 4);
    }

    #[test]
    fn hosts_are_case_insensitive_and_values_matter() {
        // The interceptor lowercases hosts, so these two claim the same key.
        let a = keys(&spec(vec![rule(&["A.example"], &[], &[])]));
        let b = keys(&spec(vec![rule(&["a.example"], &[], &[])]));
        assert_eq!(a, b);
        let c = keys(&spec(vec![rule(&["a"], &[], &[("x", Some("1"))])]));
        let d = keys(&spec(vec![rule(&["a"], &[], &[("x", Some("2"))])]));
        let e = keys(&spec(vec![rule(&["a"], &[], &[("x", None)])]));
        assert!(c.is_disjoint(&d) && c.is_disjoint(&e));
        let ipv6 = keys(&spec(vec![rule(&["[::1]:80"], &[], &[])]));
        assert_eq!(ipv6.iter().next().unwrap().host, "::1");
    }

    #[test]
    fn conflicts_name_both_routes() {
        let me = id(RouteKind::InterceptorRoute, "a");
        let mine = keys(&spec(vec![rule(&["h"], &["/p"], &[])]));
        let same = keys(&spec(vec![rule(&["h"], &["p/"], &[])]));
        let other = keys(&spec(vec![rule(&["h"], &["/q"], &[])]));
        let found = conflicts(
            &me,
            &mine,
            [
                (me.clone(), &mine),
                (id(RouteKind::HttpScaledObject, "b"), &same),
                (id(RouteKind::InterceptorRoute, "c"), &other),
                (id(RouteKind::InterceptorRoute, "d"), &same),
            ],
        );
        assert_eq!(found.len(), 2);
        let msg = conflict_message(&me, &found).unwrap();
        assert_eq!(
            msg,
            "InterceptorRoute ns/a and InterceptorRoute ns/d, HTTPScaledObject ns/b claim the same \
             route (host \"h\", path \"/p\")"
        );
        assert_eq!(conflict_message(&me, &[]), None);
    }

    #[test]
    fn key_display_lists_headers() {
        let k = keys(&spec(vec![rule(
            &[],
            &[],
            &[("X", Some("1")), ("Y", None)],
        )]));
        assert_eq!(
            k.iter().next().unwrap().to_string(),
            "host \"*\", path \"/\", headers [x=\"1\", y]"
        );
    }
}
