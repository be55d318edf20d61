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
use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use keda_http_api::routing::{HeaderMatcher, HostPattern, normalise_host, path_prefix};

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
        let trimmed = path_prefix(path);
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
                let Some(headers) = HeaderMatcher::compile_all(&rule.headers) else {
                    tracing::warn!(namespace = %source.namespace, name = %source.name, "rule with an invalid header name skipped");
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
                for host in &hosts {
                    let tier = match host {
                        HostPattern::Exact(h) => index.exact.entry(h.as_str().into()).or_default(),
                        // An empty suffix matches no host (the lookup never asks for it).
                        HostPattern::Wildcard(h) if h.is_empty() => continue,
                        HostPattern::Wildcard(h) => {
                            index.wildcard.entry(h.as_str().into()).or_default()
                        }
                        HostPattern::Any => &mut index.any,
                    };
                    for path in &paths {
                        let entries = tier.prefixes.entry((*path).into()).or_default();
                        // The same route may reach a key twice (duplicate hosts/paths); once is enough
                        // when the matchers are the same.
                        if entries.iter().any(|e| e.route == i && e.headers == headers) {
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
            let valued = e.headers.iter().filter(|m| m.is_valued()).count();
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
        let sources: Vec<RouteSource> = routes.iter().map(|r| r.source.clone()).collect();
        let index = RouteIndex::build(&sources);
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
