//! Route collection: the watched InterceptorRoutes and HTTPScaledObjects as the routes the
//! interceptor serves (compat §2.3, §3.1).
//!
//! - An object without a namespace or name is skipped.
//! - An object whose `validate()` fails is skipped (with the validation error): the API server
//!   would have refused it, and it must neither receive traffic nor put another route into
//!   conflict.
//! - HTTPScaledObjects are converted with [`route_spec_from_httpso`].
//! - An HTTPScaledObject whose namespace/name a (valid) InterceptorRoute already has is
//!   skipped: the InterceptorRoute wins.
//!
//! The result is sorted by namespace/name.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::key::{RouteId, RouteKey, keys};
use super::kind::RouteKind;
use crate::convert::route_spec_from_httpso;
use crate::interceptor_route::InterceptorRouteSpec;
use crate::validation::ValidationError;
use crate::{HTTPScaledObject, InterceptorRoute};

/// One route before the interceptor binds it: identity, age and spec.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSource {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// `metadata.creationTimestamp` (older wins ties; absent sorts as oldest, like Go's zero
    /// time).
    pub created: Option<Time>,
    /// Origin.
    pub kind: RouteKind,
    /// The route (converted for HTTPScaledObjects).
    pub spec: InterceptorRouteSpec,
}

impl RouteSource {
    /// The queue key `"<namespace>/<name>"`.
    pub fn key(&self) -> String {
        crate::queue::route_key(&self.namespace, &self.name)
    }

    /// Kind, namespace and name.
    pub fn id(&self) -> RouteId {
        RouteId {
            kind: self.kind,
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
        }
    }

    /// The route keys the spec claims.
    pub fn route_keys(&self) -> std::collections::BTreeSet<RouteKey> {
        keys(&self.spec)
    }
}

/// Why an object is not routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// No `metadata.namespace` or `metadata.name`.
    #[error("the object has no namespace or name")]
    Unnamed,
    /// The spec breaks the CRD's rules.
    #[error("invalid: {0}")]
    Invalid(#[source] ValidationError),
    /// An InterceptorRoute has the same namespace/name.
    #[error("an InterceptorRoute has the same namespace/name")]
    Shadowed,
}

/// An object left out of the routes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its kind.
    pub kind: RouteKind,
    /// `metadata.namespace`, if any.
    pub namespace: Option<String>,
    /// `metadata.name`, if any.
    pub name: Option<String>,
    /// Why.
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}: {}",
            self.kind,
            self.namespace.as_deref().unwrap_or("?"),
            self.name.as_deref().unwrap_or("?"),
            self.reason
        )
    }
}

/// The routes and what was left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collection {
    /// The routes, sorted by namespace/name.
    pub sources: Vec<RouteSource>,
    /// The objects left out, InterceptorRoutes first.
    pub skipped: Vec<Skipped>,
}

/// Collects routes from watched objects, dropping invalid ones (see the module doc).
pub fn collect<'a>(
    routes: impl IntoIterator<Item = &'a InterceptorRoute>,
    httpsos: impl IntoIterator<Item = &'a HTTPScaledObject>,
) -> Collection {
    collect_inner(routes, httpsos, true)
}

/// [`collect`] without the `validate()` check, for objects the caller has already checked
/// or built itself (tests, benchmarks).
pub fn collect_unchecked<'a>(
    routes: impl IntoIterator<Item = &'a InterceptorRoute>,
    httpsos: impl IntoIterator<Item = &'a HTTPScaledObject>,
) -> Collection {
    collect_inner(routes, httpsos, false)
}

fn collect_inner<'a>(
    routes: impl IntoIterator<Item = &'a InterceptorRoute>,
    httpsos: impl IntoIterator<Item = &'a HTTPScaledObject>,
    validate: bool,
) -> Collection {
    let mut by_key: BTreeMap<(Arc<str>, Arc<str>), RouteSource> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut skip = |kind, meta: &kube::api::ObjectMeta, reason| {
        skipped.push(Skipped {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            reason,
        });
    };
    for ir in routes {
        let meta = &ir.metadata;
        let kind = RouteKind::InterceptorRoute;
        let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) else {
            skip(kind, meta, SkipReason::Unnamed);
            continue;
        };
        if validate && let Err(error) = ir.spec.validate() {
            skip(kind, meta, SkipReason::Invalid(error));
            continue;
        }
        let source = RouteSource {
            namespace: Arc::from(ns.as_str()),
            name: Arc::from(name.as_str()),
            created: meta.creation_timestamp.clone(),
            kind,
            spec: ir.spec.clone(),
        };
        by_key.insert((source.namespace.clone(), source.name.clone()), source);
    }
    for so in httpsos {
        let meta = &so.metadata;
        let kind = RouteKind::HTTPScaledObject;
        let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) else {
            skip(kind, meta, SkipReason::Unnamed);
            continue;
        };
        if validate && let Err(error) = so.spec.validate() {
            skip(kind, meta, SkipReason::Invalid(error));
            continue;
        }
        let key: (Arc<str>, Arc<str>) = (Arc::from(ns.as_str()), Arc::from(name.as_str()));
        if by_key.contains_key(&key) {
            skip(kind, meta, SkipReason::Shadowed);
            continue;
        }
        let source = RouteSource {
            namespace: key.0.clone(),
            name: key.1.clone(),
            created: meta.creation_timestamp.clone(),
            kind,
            spec: route_spec_from_httpso(&so.spec),
        };
        by_key.insert(key, source);
    }
    Collection {
        sources: by_key.into_values().collect(),
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::builders::{httpso, interceptor_route, rule, valid_spec};

    #[test]
    fn interceptor_routes_win_name_clashes_and_httpsos_are_converted() {
        let ir = interceptor_route(
            "ns",
            "app",
            valid_spec(vec![rule(&["ir.example"], &[], &[])]),
        );
        let c = collect(
            [&ir],
            [
                &httpso("ns", "app", &["so.example"], &[]),
                &httpso("ns", "other", &[], &["/api"]),
            ],
        );
        let names: Vec<(&str, RouteKind)> = c.sources.iter().map(|s| (&*s.name, s.kind)).collect();
        assert_eq!(
            names,
            [
                ("app", RouteKind::InterceptorRoute),
                ("other", RouteKind::HTTPScaledObject)
            ]
        );
        assert_eq!(c.sources[1].spec.rules[0].paths[0].value, "/api");
        assert_eq!(c.skipped.len(), 1);
        assert_eq!(c.skipped[0].reason, SkipReason::Shadowed);
        assert_eq!(
            c.skipped[0].to_string(),
            "HTTPScaledObject ns/app: an InterceptorRoute has the same namespace/name"
        );
    }

    #[test]
    fn invalid_objects_are_skipped_with_the_reason() {
        let mut bad = interceptor_route("ns", "app", valid_spec(vec![rule(&["a"], &[], &[])]));
        bad.spec.target.port_name = Some("http".into());
        let unnamed = {
            let mut r = interceptor_route("ns", "x", valid_spec(vec![]));
            r.metadata.name = None;
            r
        };
        let so = httpso("ns", "app", &["so.example"], &[]);
        let c = collect([&bad, &unnamed], [&so]);
        // The invalid InterceptorRoute does not shadow the HTTPScaledObject.
        assert_eq!(c.sources.len(), 1);
        assert_eq!(c.sources[0].kind, RouteKind::HTTPScaledObject);
        assert_eq!(c.skipped.len(), 2);
        assert!(
            matches!(&c.skipped[0].reason, SkipReason::Invalid(e) if e.to_string().contains("spec.target")),
            "{:?}",
            c.skipped[0]
        );
        assert_eq!(c.skipped[1].reason, SkipReason::Unnamed);
        // Unchecked collection keeps the invalid route.
        assert_eq!(collect_unchecked([&bad], []).sources.len(), 1);
    }

    #[test]
    fn sources_know_their_keys() {
        let ir = interceptor_route(
            "ns",
            "app",
            valid_spec(vec![rule(&["A.example"], &[], &[])]),
        );
        let c = collect([&ir], []);
        assert_eq!(c.sources[0].key(), "ns/app");
        assert_eq!(c.sources[0].id().to_string(), "InterceptorRoute ns/app");
        assert_eq!(c.sources[0].route_keys(), keys(&ir.spec));
    }
}
