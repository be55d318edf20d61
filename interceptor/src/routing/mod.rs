//! The routing table (reference §3): which route a request belongs to.
//!
//! [`RouteSource::collect`] turns InterceptorRoutes and HTTPScaledObjects into route sources
//! (HTTPScaledObjects converted as in reference §2.3; an InterceptorRoute wins a
//! namespace/name clash). [`RouteIndex::build`] expands every rule's hosts × paths into keys
//! and sorts the entries under each key; [`RouteIndex::lookup`] is the hot-path matcher.
//! [`RouteTable`] pairs the index with the bound [`Route`]s (counters and endpoint pool), and
//! [`RouteTableHandle`] swaps whole tables through `ArcSwap`; a request loads the table once.
//!
//! Lookup order: exact host (port stripped), then `*.suffix` wildcards from the most to the
//! least specific, then the catch-all; within a host tier the longest segment-aware path
//! prefix whose entries pass the header matchers (AND); under one key, entries are ordered by
//! more header matchers, more valued matchers, older creation, namespace descending, name
//! descending. Two deliberate differences from the official add-on are described in the
//! README ("Routing"): hosts match case-insensitively, and a header mismatch under the longest
//! prefix falls back to shorter prefixes of the same host tier.

mod handle;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keda_http_api::convert::route_spec_from_httpso;
use keda_http_api::interceptor_route::{HeaderMatch, InterceptorRouteSpec};
use keda_http_api::{HTTPScaledObject, InterceptorRoute};

use crate::endpoints::{Pool, Target, TargetPort};
use crate::queue::RouteCounters;

pub use handle::{InstallReport, RouteTableHandle};

/// Which resource a route came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RouteKind {
    /// `http.keda.sh/v1beta1` InterceptorRoute.
    InterceptorRoute,
    /// `http.keda.sh/v1alpha1` HTTPScaledObject, converted.
    HTTPScaledObject,
}

/// One route before binding: identity, age and spec.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSource {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// `metadata.creationTimestamp` (older wins ties; absent sorts as oldest, like Go's zero time).
    pub created: Option<Time>,
    /// Origin.
    pub kind: RouteKind,
    /// The route (converted for HTTPScaledObjects).
    pub spec: InterceptorRouteSpec,
}

impl RouteSource {
    /// Route sources from the watched objects. Objects without a name or namespace are skipped;
    /// an HTTPScaledObject whose namespace/name an InterceptorRoute already has is skipped.
    /// The result is sorted by namespace/name.
    pub fn collect(routes: &[InterceptorRoute], httpsos: &[HTTPScaledObject]) -> Vec<Self> {
        let mut by_key: std::collections::BTreeMap<(Arc<str>, Arc<str>), Self> =
            std::collections::BTreeMap::new();
        for ir in routes {
            let (Some(ns), Some(name)) = (&ir.metadata.namespace, &ir.metadata.name) else {
                continue;
            };
            let source = Self {
                namespace: Arc::from(ns.as_str()),
                name: Arc::from(name.as_str()),
                created: ir.metadata.creation_timestamp.clone(),
                kind: RouteKind::InterceptorRoute,
                spec: ir.spec.clone(),
            };
            by_key.insert((source.namespace.clone(), source.name.clone()), source);
        }
        for so in httpsos {
            let (Some(ns), Some(name)) = (&so.metadata.namespace, &so.metadata.name) else {
                continue;
            };
            let key = (Arc::from(ns.as_str()), Arc::from(name.as_str()));
            if by_key.contains_key(&key) {
                tracing::debug!(namespace = %ns, name = %name, "HTTPScaledObject shadowed by an InterceptorRoute");
                continue;
            }
            let source = Self {
                namespace: key.0.clone(),
                name: key.1.clone(),
                created: so.metadata.creation_timestamp.clone(),
                kind: RouteKind::HTTPScaledObject,
                spec: route_spec_from_httpso(&so.spec),
            };
            by_key.insert(key, source);
        }
        by_key.into_values().collect()
    }

    /// The queue key `"<namespace>/<name>"`.
    pub fn key(&self) -> String {
        keda_http_api::queue::route_key(&self.namespace, &self.name)
    }

    /// The `coldStart.fallback.service` target, if set.
    pub fn fallback_target(&self) -> Option<Target> {
        let service = &self.spec.cold_start.as_ref()?.fallback.as_ref()?.service;
        Some(Target {
            namespace: Arc::clone(&self.namespace),
            service: Arc::from(service.name.as_str()),
            port: match (&service.port_name, service.port) {
                (Some(name), _) if !name.is_empty() => TargetPort::Name(Arc::from(name.as_str())),
                (_, Some(port)) => TargetPort::Number(port),
                _ => TargetPort::Number(80),
            },
        })
    }

    /// The upstream target.
    pub fn target(&self) -> Target {
        let t = &self.spec.target;
        Target {
            namespace: Arc::clone(&self.namespace),
            service: Arc::from(t.service.as_str()),
            port: match (&t.port_name, t.port) {
                (Some(name), _) if !name.is_empty() => TargetPort::Name(Arc::from(name.as_str())),
                (_, Some(port)) => TargetPort::Number(port),
                _ => TargetPort::Number(80),
            },
        }
    }
}

/// A route bound to its counters and endpoint pool.
#[derive(Debug)]
pub struct Route {
    /// `"<namespace>/<name>"`.
    pub key: Arc<str>,
    /// Where it came from and what it says.
    pub source: RouteSource,
    /// The upstream target.
    pub target: Target,
    /// The route's in-flight and total counters.
    pub counters: Arc<RouteCounters>,
    /// The target's ready endpoints.
    pub pool: Arc<Pool>,
    /// The ready endpoints of `coldStart.fallback.service`, if set.
    pub fallback: Option<Arc<Pool>>,
    /// The route's metric handles (resolved once, reused by every request).
    pub metrics: Arc<crate::metrics::RouteMetrics>,
}

/// A header matcher, compiled.
#[derive(Clone, Debug)]
struct HeaderMatcher {
    name: HeaderName,
    value: Option<Box<[u8]>>,
}

impl HeaderMatcher {
    fn matches(&self, headers: &HeaderMap) -> bool {
        match &self.value {
            None => headers.contains_key(&self.name),
            Some(want) => headers
                .get_all(&self.name)
                .iter()
                .any(|v| v.as_bytes() == &**want),
        }
    }
}

/// One (route, header matchers) pair under a host/path key.
#[derive(Clone, Debug)]
struct Entry {
    route: usize,
    headers: Box<[HeaderMatcher]>,
}

impl Entry {
    fn matches(&self, headers: &HeaderMap) -> bool {
        self.headers.iter().all(|m| m.matches(headers))
    }
}

/// Path prefixes of one host tier: trimmed prefix (`""` for the root) → sorted entries.
#[derive(Clone, Debug, Default)]
struct PathIndex {
    prefixes: HashMap<Box<str>, Vec<Entry>>,
}

impl PathIndex {
    /// The first matching entry under the longest matching prefix that has one.
    fn lookup(&self, path: &str, headers: &HeaderMap) -> Option<usize> {
        let trimmed = path.trim_matches('/');
        let mut candidate = trimmed;
        loop {
            if let Some(entries) = self.prefixes.get(candidate)
                && let Some(entry) = entries.iter().find(|e| e.matches(headers))
            {
                return Some(entry.route);
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = match candidate.rfind('/') {
                Some(i) => &candidate[..i],
                None => "",
            };
        }
    }
}

/// Where a rule host puts its entries.
#[derive(Debug, PartialEq, Eq)]
enum HostKey {
    Exact(String),
    Wildcard(String),
    Any,
}

/// Normalises a configured host: trimmed, lowercased, port stripped; `*` or empty → any;
/// `*.x` → wildcard `x`.
fn host_key(host: &str) -> HostKey {
    let host = strip_port(host.trim()).to_ascii_lowercase();
    if host.is_empty() || host == "*" {
        HostKey::Any
    } else if let Some(suffix) = host.strip_prefix("*.") {
        HostKey::Wildcard(suffix.to_owned())
    } else {
        HostKey::Exact(host)
    }
}

/// Strips a `:port` suffix (IPv6 literals keep their brackets).
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The compiled matcher over a list of route sources; lookups return indices into that list.
#[derive(Clone, Debug, Default)]
pub struct RouteIndex {
    exact: HashMap<Box<str>, PathIndex>,
    wildcard: HashMap<Box<str>, PathIndex>,
    any: PathIndex,
}

impl RouteIndex {
    /// Expands every rule of every source into host/path keys and sorts each key's entries.
    /// Header matchers with an invalid name make their rule unmatchable (it is skipped).
    pub fn build(sources: &[RouteSource]) -> Self {
        let mut index = Self::default();
        for (i, source) in sources.iter().enumerate() {
            for rule in &source.spec.rules {
                let Some(headers) = compile_headers(&rule.headers) else {
                    tracing::warn!(namespace = %source.namespace, name = %source.name, "rule with an invalid header name skipped");
                    continue;
                };
                let hosts: Vec<HostKey> = if rule.hosts.is_empty() {
                    vec![HostKey::Any]
                } else {
                    rule.hosts.iter().map(|h| host_key(h)).collect()
                };
                let paths: Vec<&str> = if rule.paths.is_empty() {
                    vec![""]
                } else {
                    rule.paths
                        .iter()
                        .map(|p| p.value.trim_matches('/'))
                        .collect()
                };
                for host in &hosts {
                    let tier = match host {
                        HostKey::Exact(h) => index.exact.entry(h.as_str().into()).or_default(),
                        HostKey::Wildcard(h) => {
                            index.wildcard.entry(h.as_str().into()).or_default()
                        }
                        HostKey::Any => &mut index.any,
                    };
                    for path in &paths {
                        let entries = tier.prefixes.entry((*path).into()).or_default();
                        // The same route may reach a key twice (duplicate hosts/paths); once is enough
                        // when the matchers are the same.
                        if entries
                            .iter()
                            .any(|e| e.route == i && same_matchers(&e.headers, &headers))
                        {
                            continue;
                        }
                        entries.push(Entry {
                            route: i,
                            headers: headers.clone(),
                        });
                    }
                }
            }
        }
        let order = |e: &Entry| {
            let s = &sources[e.route];
            let valued = e.headers.iter().filter(|m| m.value.is_some()).count();
            (
                Reverse(e.headers.len()),
                Reverse(valued),
                s.created.clone(),
                Reverse(Arc::clone(&s.namespace)),
                Reverse(Arc::clone(&s.name)),
            )
        };
        for tier in index
            .exact
            .values_mut()
            .chain(index.wildcard.values_mut())
            .chain(std::iter::once(&mut index.any))
        {
            for entries in tier.prefixes.values_mut() {
                entries.sort_by_cached_key(order);
            }
        }
        index
    }

    /// The matching route for `host` (already lowercased, port stripped), `path` and
    /// `headers`, as an index into the sources the index was built from.
    pub fn lookup(&self, host: &str, path: &str, headers: &HeaderMap) -> Option<usize> {
        if let Some(tier) = self.exact.get(host)
            && let Some(i) = tier.lookup(path, headers)
        {
            return Some(i);
        }
        if !self.wildcard.is_empty() {
            let mut rest = host;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if rest.is_empty() {
                    break;
                }
                if let Some(tier) = self.wildcard.get(rest)
                    && let Some(i) = tier.lookup(path, headers)
                {
                    return Some(i);
                }
            }
        }
        self.any.lookup(path, headers)
    }
}

fn same_matchers(a: &[HeaderMatcher], b: &[HeaderMatcher]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.value == y.value)
}

fn compile_headers(headers: &[HeaderMatch]) -> Option<Box<[HeaderMatcher]>> {
    headers
        .iter()
        .map(|h| {
            HeaderName::from_bytes(h.name.as_bytes())
                .ok()
                .map(|name| HeaderMatcher {
                    name,
                    value: h.value.as_ref().map(|v| v.as_bytes().into()),
                })
        })
        .collect()
}

/// An installed routing table: the bound routes and their index. Immutable.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    index: RouteIndex,
}

impl RouteTable {
    /// A table over bound routes (in the order their sources were indexed).
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        let sources: Vec<RouteSource> = routes.iter().map(|r| r.source.clone()).collect();
        let index = RouteIndex::build(&sources);
        Self { routes, index }
    }

    /// The route for a request. `host` is the request authority (port allowed, any case).
    pub fn route(&self, host: &str, path: &str, headers: &HeaderMap) -> Option<&Arc<Route>> {
        let host = strip_port(host);
        let i = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.index.lookup(&host.to_ascii_lowercase(), path, headers)
        } else {
            self.index.lookup(host, path, headers)
        }?;
        self.routes.get(i)
    }

    /// Every route, sorted by key.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The table as JSON for `GET /routes`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.routes
                .iter()
                .map(|r| {
                    let set = r.pool.current();
                    serde_json::json!({
                        "key": &*r.key,
                        "kind": r.source.kind,
                        "target": r.target.to_string(),
                        "appProtocol": set.app_protocol,
                        "readyEndpoints": set.ready.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "coldStartHeld": r.counters.held().load(std::sync::atomic::Ordering::Relaxed),
                        "fallback": r.fallback.as_ref().map(|p| p.target().to_string()),
                        "rules": &r.source.spec.rules,
                        "timeouts": &r.source.spec.timeouts,
                    })
                })
                .collect(),
        )
    }
}
