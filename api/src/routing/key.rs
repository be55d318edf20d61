//! Route keys (host + path prefix + header set) and conflicts between routes.
//!
//! Two routes conflict when they claim exactly the same key: the interceptor sends a request
//! for that key to only one of them. Keys are normalised as the interceptor reads rules: hosts
//! by [`HostPattern::parse`], paths by [`path_prefix`], header names folded to lower case, the
//! header set unordered.

use std::collections::BTreeSet;
use std::fmt;

use super::host::HostPattern;
use super::kind::RouteKind;
use super::path::path_prefix;
use crate::interceptor_route::{HeaderMatch, InterceptorRouteSpec};

/// One routing key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    /// The host pattern.
    pub host: HostPattern,
    /// Path prefix without leading/trailing `/`; empty means the root.
    pub path: String,
    /// Header matchers: lower-cased name and optional exact value, sorted.
    pub headers: Vec<(String, Option<String>)>,
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {:?}, path \"/{}\"",
            self.host.to_string(),
            self.path
        )?;
        if !self.headers.is_empty() {
            f.write_str(", headers [")?;
            for (i, (name, value)) in self.headers.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                match value {
                    Some(v) => write!(f, "{name}={v:?}")?,
                    None => f.write_str(name)?,
                }
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

/// Every key a route spec claims. A spec without rules claims none (it is never routed).
pub fn keys(spec: &InterceptorRouteSpec) -> BTreeSet<RouteKey> {
    let mut out = BTreeSet::new();
    for rule in &spec.rules {
        let headers = header_set(&rule.headers);
        let hosts: Vec<HostPattern> = if rule.hosts.is_empty() {
            vec![HostPattern::Any]
        } else {
            rule.hosts.iter().map(|h| HostPattern::parse(h)).collect()
        };
        let paths: Vec<&str> = if rule.paths.is_empty() {
            vec![""]
        } else {
            rule.paths.iter().map(|p| path_prefix(&p.value)).collect()
        };
        for host in &hosts {
            for path in &paths {
                out.insert(RouteKey {
                    host: host.clone(),
                    path: (*path).to_owned(),
                    headers: headers.clone(),
                });
            }
        }
    }
    out
}

fn header_set(headers: &[HeaderMatch]) -> Vec<(String, Option<String>)> {
    let set: BTreeSet<(String, Option<String>)> = headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
        .collect();
    set.into_iter().collect()
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
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
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
    use super::*;
    use crate::routing::builders::{rule, spec};

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
    fn hosts_normalise_as_the_interceptor_reads_them() {
        let key = |h: &str| keys(&spec(vec![rule(&[h], &[], &[])]));
        assert_eq!(key("A.example"), key("a.example"));
        assert_eq!(key("EXAMPLE.com."), key("example.com"));
        assert_eq!(key("[::1]:80"), key("::1"));
        assert_ne!(key("example.com:abc"), key("example.com"));
        assert_eq!(key(""), key("*"));
        assert_ne!(key("*.a.b"), key("a.b"));
        let c = keys(&spec(vec![rule(&["a"], &[], &[("x", Some("1"))])]));
        let d = keys(&spec(vec![rule(&["a"], &[], &[("x", Some("2"))])]));
        let e = keys(&spec(vec![rule(&["a"], &[], &[("x", None)])]));
        assert!(c.is_disjoint(&d) && c.is_disjoint(&e));
    }

    #[test]
    fn conflicts_name_both_routes() {
        let me = id(RouteKind::InterceptorRoute, "a");
        let mine = keys(&spec(vec![rule(&["h"], &["/p"], &[])]));
        let same = keys(&spec(vec![rule(&["H"], &["p/"], &[])]));
        let other = keys(&spec(vec![rule(&["h"], &["/q"], &[])]));
        let found = conflicts(
            &me,
            &mine,
            [
                (me.clone(), &mine),
                (id(RouteKind::HTTPScaledObject, "b"), &same),
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
            &["*.A.b"],
            &["/a//b/"],
            &[("X", Some("1")), ("Y", None)],
        )]));
        assert_eq!(
            k.iter().next().unwrap().to_string(),
            "host \"*.a.b\", path \"/a//b\", headers [x=\"1\", y]"
        );
    }
}
