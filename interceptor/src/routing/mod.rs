//! The routing table (compat §3): which route a request belongs to.
//!
//! What matches is defined once in [`keda_http_api::routing`] (host and path normalisation,
//! header matchers, route collection and [`RouteSource`]); this module is its fast form.
//! [`RouteIndex::build`] expands every rule's hosts × paths into keys and sorts the entries
//! under each key; [`RouteIndex::lookup`] is the hot-path matcher, tested to agree with
//! [`keda_http_api::routing::rule_matches`]. [`RouteTable`] pairs the index with the bound
//! [`Route`]s (counters and endpoint pool), and [`RouteTableHandle`] swaps whole tables through
//! `ArcSwap`; a request loads the table once.
//!
//! Lookup order: exact host, then `*.suffix` wildcards from the most to the least specific,
//! then the catch-all; within a host tier the longest segment-aware path prefix whose entries
//! pass the header matchers (AND); under one key, entries are ordered by more header matchers,
//! more valued matchers, older creation, namespace descending, name descending. Two deliberate
//! differences from the official add-on are described in the README ("Interceptor: routing"):
//! hosts match case-insensitively, and a header mismatch under the longest prefix falls back
//! to shorter prefixes of the same host tier.

mod handle;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::sync::Arc;

use http::HeaderMap;
use keda_http_api::routing::{
    HeaderMatcher, HostPattern, normalise_host, path_has_prefix, path_prefix,
};

use crate::endpoints::{Pool, Target, TargetPort};
use crate::queue::RouteCounters;

pub use handle::{InstallReport, RouteTableHandle};
pub use keda_http_api::routing::{RouteKind, RouteSource};

/// The `coldStart.fallback.service` target of a route, if set.
pub fn fallback_target(source: &RouteSource) -> Option<Target> {
    let service = &source.spec.cold_start.as_ref()?.fallback.as_ref()?.service;
    Some(Target {
        namespace: Arc::clone(&source.namespace),
        service: Arc::from(service.name.as_str()),
        port: match (&service.port_name, service.port) {
            (Some(name), _) if !name.is_empty() => TargetPort::Name(Arc::from(name.as_str())),
            (_, Some(port)) => TargetPort::Number(port),
            _ => TargetPort::Number(80),
        },
    })
}

/// The upstream target of a route.
pub fn target(source: &RouteSource) -> Target {
    let t = &source.spec.target;
    Target {
        namespace: Arc::clone(&source.namespace),
        service: Arc::from(t.service.as_str()),
        port: match (&t.port_name, t.port) {
            (Some(name), _) if !name.is_empty() => TargetPort::Name(Arc::from(name.as_str())),
            (_, Some(port)) => TargetPort::Number(port),
            _ => TargetPort::Number(80),
        },
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

/// The hash maps of the index: foldhash (already in the dependency tree through hashbrown)
/// hashes a short host in a few nanoseconds where SipHash takes tens. Only configured keys are
/// inserted, so a client cannot flood a map; it can only look keys up.
type Map<K, V> = foldhash::HashMap<K, V>;

/// Above this many prefixes under one host, a hash map beats a scan. Tests set it low so that
/// the property tests (a handful of prefixes per host) exercise both forms.
const SCAN_PREFIXES: usize = if cfg!(test) { 2 } else { 8 };

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

/// The first entry that passes the header matchers.
fn first_match(entries: &[Entry], headers: &HeaderMap) -> Option<usize> {
    entries.iter().find(|e| e.matches(headers)).map(|e| e.route)
}

/// A trimmed path prefix and its sorted entries.
type Prefix = (Box<str>, Box<[Entry]>);

/// Path prefixes of one host tier: trimmed prefix (`""` for the root) → sorted entries.
#[derive(Clone, Debug)]
enum PathIndex {
    /// A few prefixes, longest first: the first one on a segment boundary of the path whose
    /// entries pass is the answer, without hashing anything.
    Scan(Box<[Prefix]>),
    /// Many prefixes: the path's own prefixes are looked up from the longest.
    Map(Map<Box<str>, Box<[Entry]>>),
}

impl Default for PathIndex {
    fn default() -> Self {
        Self::Scan(Box::default())
    }
}

impl PathIndex {
    /// The compact form of one host's prefixes; entries are sorted by `order`.
    fn freeze<O: Ord>(prefixes: Map<Box<str>, Vec<Entry>>, order: &impl Fn(&Entry) -> O) -> Self {
        let many = prefixes.len() > SCAN_PREFIXES;
        let sorted = prefixes.into_iter().map(|(prefix, mut entries)| {
            entries.sort_by_cached_key(order);
            (prefix, entries.into_boxed_slice())
        });
        if many {
            return Self::Map(sorted.collect());
        }
        let mut scan: Vec<_> = sorted.collect();
        scan.sort_by_key(|(prefix, _)| Reverse(prefix.len()));
        Self::Scan(scan.into_boxed_slice())
    }

    /// The first matching entry under the longest matching prefix that has one.
    fn lookup(&self, path: &str, headers: &HeaderMap) -> Option<usize> {
        let trimmed = path_prefix(path);
        match self {
            Self::Scan(prefixes) => prefixes
                .iter()
                .filter(|(prefix, _)| path_has_prefix(trimmed, prefix))
                .find_map(|(_, entries)| first_match(entries, headers)),
            Self::Map(prefixes) => {
                let mut candidate = trimmed;
                loop {
                    if let Some(entries) = prefixes.get(candidate)
                        && let Some(route) = first_match(entries, headers)
                    {
                        return Some(route);
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
    }
}

/// The host tiers while an index is being built.
#[derive(Default)]
struct Builder {
    exact: Map<Box<str>, Map<Box<str>, Vec<Entry>>>,
    wildcard: Map<Box<str>, Map<Box<str>, Vec<Entry>>>,
    any: Map<Box<str>, Vec<Entry>>,
}

/// The compiled matcher over a list of route sources; lookups return indices into that list.
#[derive(Clone, Debug, Default)]
pub struct RouteIndex {
    exact: Map<Box<str>, PathIndex>,
    wildcard: Map<Box<str>, PathIndex>,
    any: PathIndex,
}

impl RouteIndex {
    /// Expands every rule of every source into host/path keys and sorts each key's entries.
    /// Header matchers with an invalid name make their rule unmatchable (it is skipped).
    pub fn build(sources: &[RouteSource]) -> Self {
        Self::build_with(sources.len(), |i| &sources[i])
    }

    /// [`Self::build`] over `len` sources that `source` hands out by index (so that a table
    /// indexes its bound routes without copying their sources).
    fn build_with<'a>(len: usize, source: impl Fn(usize) -> &'a RouteSource) -> Self {
        let mut builder = Builder::default();
        for route in 0..len {
            let src = source(route);
            for rule in &src.spec.rules {
                let Some(headers) = HeaderMatcher::compile_all(&rule.headers) else {
                    tracing::warn!(namespace = %src.namespace, name = %src.name, "rule with an invalid header name skipped");
                    continue;
                };
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
                for host in hosts {
                    let tier = match host {
                        HostPattern::Exact(h) => builder.exact.entry(h.into()).or_default(),
                        // An empty suffix matches no host (the lookup never asks for it).
                        HostPattern::Wildcard(h) if h.is_empty() => continue,
                        HostPattern::Wildcard(h) => builder.wildcard.entry(h.into()).or_default(),
                        HostPattern::Any => &mut builder.any,
                    };
                    for path in &paths {
                        let entries = tier.entry((*path).into()).or_default();
                        // The same route may reach a key twice (duplicate hosts/paths); once is
                        // enough when the matchers are the same.
                        if entries
                            .iter()
                            .any(|e| e.route == route && e.headers == headers)
                        {
                            continue;
                        }
                        entries.push(Entry {
                            route,
                            headers: headers.clone(),
                        });
                    }
                }
            }
        }
        let order = |e: &Entry| {
            let s = source(e.route);
            let valued = e.headers.iter().filter(|m| m.is_valued()).count();
            (
                Reverse(e.headers.len()),
                Reverse(valued),
                s.created.clone(),
                Reverse(Arc::clone(&s.namespace)),
                Reverse(Arc::clone(&s.name)),
            )
        };
        let freeze = |tier: Map<Box<str>, Map<Box<str>, Vec<Entry>>>| -> Map<Box<str>, PathIndex> {
            tier.into_iter()
                .map(|(host, prefixes)| (host, PathIndex::freeze(prefixes, &order)))
                .collect()
        };
        Self {
            exact: freeze(builder.exact),
            wildcard: freeze(builder.wildcard),
            any: PathIndex::freeze(builder.any, &order),
        }
    }

    /// The matching route for `host` (normalised with
    /// [`keda_http_api::routing::normalise_host`]), `path` and `headers`, as an index into the
    /// sources the index was built from.
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

/// An installed routing table: the bound routes and their index. Immutable.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    index: RouteIndex,
}

impl RouteTable {
    /// A table over bound routes (in the order their sources were indexed).
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        let index = RouteIndex::build_with(routes.len(), |i| &routes[i].source);
        Self { routes, index }
    }

    /// The route for a request. `host` is the request authority (port allowed, any case).
    pub fn route(&self, host: &str, path: &str, headers: &HeaderMap) -> Option<&Arc<Route>> {
        let i = self.index.lookup(&normalise_host(host), path, headers)?;
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
