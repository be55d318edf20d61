use http::{HeaderMap, HeaderName, HeaderValue};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keda_http_api::interceptor_route::RoutingRule;
use keda_http_api::routing::builders::{httpso, interceptor_route, rule, spec, valid_spec};
use keda_http_api::routing::{collect, normalise_host, rule_matches};
use proptest::prelude::*;

use super::*;

fn time(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid"))
}

fn source(ns: &str, name: &str, created: Option<i64>, rules: Vec<RoutingRule>) -> RouteSource {
    RouteSource {
        namespace: ns.into(),
        name: name.into(),
        created: created.map(time),
        kind: RouteKind::InterceptorRoute,
        spec: spec(rules),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in pairs {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    map
}

/// Looks up through [`RouteTable::route`]'s host handling, returning the route name.
fn route_name(
    sources: &[RouteSource],
    host: &str,
    path: &str,
    hdrs: &[(&str, &str)],
) -> Option<String> {
    let index = RouteIndex::build(sources);
    let host = normalise_host(host);
    index
        .lookup(&host, path, &headers(hdrs))
        .map(|i| sources[i].name.to_string())
}

struct Case {
    name: &'static str,
    routes: Vec<RouteSource>,
    host: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    want: Option<&'static str>,
}

fn case(
    name: &'static str,
    routes: Vec<RouteSource>,
    host: &'static str,
    path: &'static str,
    headers: &[(&'static str, &'static str)],
    want: Option<&'static str>,
) -> Case {
    Case {
        name,
        routes,
        host,
        path,
        headers: headers.to_vec(),
        want,
    }
}

#[test]
fn routing_rules_table() {
    let ns = "default";
    let cases = vec![
        case(
            "exact host",
            vec![source(
                ns,
                "a",
                None,
                vec![rule(&["example.com"], &[], &[])],
            )],
            "example.com",
            "/anything",
            &[],
            Some("a"),
        ),
        case(
            "port stripped from the request host",
            vec![source(
                ns,
                "a",
                None,
                vec![rule(&["example.com"], &[], &[])],
            )],
            "example.com:8080",
            "/",
            &[],
            Some("a"),
        ),
        case(
            "port stripped from the configured host",
            vec![source(
                ns,
                "a",
                None,
                vec![rule(&["example.com:8080"], &[], &[])],
            )],
            "example.com",
            "/",
            &[],
            Some("a"),
        ),
        case(
            "hosts match case-insensitively (divergence)",
            vec![source(
                ns,
                "a",
                None,
                vec![rule(&["Example.com"], &[], &[])],
            )],
            "EXAMPLE.com",
            "/",
            &[],
            Some("a"),
        ),
        case(
            "unknown host without catch-all is no match",
            vec![source(
                ns,
                "a",
                None,
                vec![rule(&["example.com"], &[], &[])],
            )],
            "other.com",
            "/",
            &[],
            None,
        ),
        case(
            "exact host with / beats wildcard with a longer path",
            vec![
                source(
                    ns,
                    "exact",
                    None,
                    vec![rule(&["a.example.com"], &["/"], &[])],
                ),
                source(
                    ns,
                    "wild",
                    None,
                    vec![rule(&["*.example.com"], &["/api/v1"], &[])],
                ),
            ],
            "a.example.com",
            "/api/v1/x",
            &[],
            Some("exact"),
        ),
        case(
            "most specific wildcard first",
            vec![
                source(ns, "wide", None, vec![rule(&["*.example.com"], &[], &[])]),
                source(
                    ns,
                    "narrow",
                    None,
                    vec![rule(&["*.b.example.com"], &[], &[])],
                ),
            ],
            "a.b.example.com",
            "/",
            &[],
            Some("narrow"),
        ),
        case(
            "wildcard matches multi-level subdomains",
            vec![source(
                ns,
                "wild",
                None,
                vec![rule(&["*.example.com"], &[], &[])],
            )],
            "x.y.example.com",
            "/",
            &[],
            Some("wild"),
        ),
        case(
            "wildcard does not match the apex",
            vec![source(
                ns,
                "wild",
                None,
                vec![rule(&["*.example.com"], &[], &[])],
            )],
            "example.com",
            "/",
            &[],
            None,
        ),
        case(
            "single-label host has no wildcard tier",
            vec![
                source(ns, "wild", None, vec![rule(&["*.localhost"], &[], &[])]),
                source(ns, "any", None, vec![rule(&["*"], &[], &[])]),
            ],
            "localhost",
            "/",
            &[],
            Some("any"),
        ),
        case(
            "wildcard beats catch-all",
            vec![
                source(ns, "any", None, vec![rule(&[], &["/api"], &[])]),
                source(ns, "wild", None, vec![rule(&["*.example.com"], &[], &[])]),
            ],
            "a.example.com",
            "/api",
            &[],
            Some("wild"),
        ),
        case(
            "empty hosts are a catch-all",
            vec![source(ns, "any", None, vec![rule(&[], &[], &[])])],
            "whatever.io",
            "/x",
            &[],
            Some("any"),
        ),
        case(
            "empty-string host is a catch-all",
            vec![source(ns, "any", None, vec![rule(&[""], &[], &[])])],
            "whatever.io",
            "/x",
            &[],
            Some("any"),
        ),
        case(
            "prefix matches the exact path",
            vec![source(ns, "api", None, vec![rule(&["h"], &["/api"], &[])])],
            "h",
            "/api",
            &[],
            Some("api"),
        ),
        case(
            "prefix matches with a trailing slash",
            vec![source(ns, "api", None, vec![rule(&["h"], &["/api"], &[])])],
            "h",
            "/api/",
            &[],
            Some("api"),
        ),
        case(
            "prefix matches a sub-path",
            vec![source(ns, "api", None, vec![rule(&["h"], &["/api/"], &[])])],
            "h",
            "/api/x/y",
            &[],
            Some("api"),
        ),
        case(
            "prefix is segment-aware",
            vec![source(ns, "api", None, vec![rule(&["h"], &["/api"], &[])])],
            "h",
            "/apiv2",
            &[],
            None,
        ),
        case(
            "longest prefix wins",
            vec![
                source(ns, "short", None, vec![rule(&["h"], &["/api"], &[])]),
                source(ns, "long", None, vec![rule(&["h"], &["/api/v1"], &[])]),
                source(ns, "root", None, vec![rule(&["h"], &["/"], &[])]),
            ],
            "h",
            "/api/v1/users",
            &[],
            Some("long"),
        ),
        case(
            "header matchers are AND-ed",
            vec![source(
                ns,
                "hdr",
                None,
                vec![rule(&["h"], &[], &[("x-a", Some("1")), ("x-b", None)])],
            )],
            "h",
            "/",
            &[("x-a", "1")],
            None,
        ),
        case(
            "header names are case-insensitive, presence matches any value",
            vec![source(
                ns,
                "hdr",
                None,
                vec![rule(&["h"], &[], &[("X-A", Some("1")), ("X-B", None)])],
            )],
            "h",
            "/",
            &[("x-a", "1"), ("x-b", "")],
            Some("hdr"),
        ),
        case(
            "header values are case-sensitive",
            vec![source(
                ns,
                "hdr",
                None,
                vec![rule(&["h"], &[], &[("x-a", Some("Yes"))])],
            )],
            "h",
            "/",
            &[("x-a", "yes")],
            None,
        ),
        case(
            "any of several values suffices",
            vec![source(
                ns,
                "hdr",
                None,
                vec![rule(&["h"], &[], &[("x-a", Some("2"))])],
            )],
            "h",
            "/",
            &[("x-a", "1"), ("x-a", "2")],
            Some("hdr"),
        ),
        case(
            "more header matchers first",
            vec![
                source(ns, "one", None, vec![rule(&["h"], &[], &[("x-a", None)])]),
                source(
                    ns,
                    "two",
                    None,
                    vec![rule(&["h"], &[], &[("x-a", None), ("x-b", None)])],
                ),
            ],
            "h",
            "/",
            &[("x-a", "1"), ("x-b", "1")],
            Some("two"),
        ),
        case(
            "more valued matchers first",
            vec![
                source(
                    ns,
                    "presence",
                    None,
                    vec![rule(&["h"], &[], &[("x-a", None)])],
                ),
                source(
                    ns,
                    "valued",
                    None,
                    vec![rule(&["h"], &[], &[("x-a", Some("1"))])],
                ),
            ],
            "h",
            "/",
            &[("x-a", "1")],
            Some("valued"),
        ),
        case(
            "older creation first",
            vec![
                source("z", "new", Some(200), vec![rule(&["h"], &[], &[])]),
                source("a", "old", Some(100), vec![rule(&["h"], &[], &[])]),
            ],
            "h",
            "/",
            &[],
            Some("old"),
        ),
        case(
            "namespace descending on equal age",
            vec![
                source("a", "x", Some(100), vec![rule(&["h"], &[], &[])]),
                source("b", "y", Some(100), vec![rule(&["h"], &[], &[])]),
            ],
            "h",
            "/",
            &[],
            Some("y"),
        ),
        case(
            "name descending on equal namespace and age",
            vec![
                source(ns, "a", Some(100), vec![rule(&["h"], &[], &[])]),
                source(ns, "b", Some(100), vec![rule(&["h"], &[], &[])]),
            ],
            "h",
            "/",
            &[],
            Some("b"),
        ),
        case(
            "header mismatch on the longest prefix falls back to a shorter one (divergence)",
            vec![
                source(
                    ns,
                    "tenant",
                    None,
                    vec![rule(&["h"], &["/api"], &[("x-tenant", Some("a"))])],
                ),
                source(ns, "root", None, vec![rule(&["h"], &["/"], &[])]),
            ],
            "h",
            "/api/x",
            &[],
            Some("root"),
        ),
        case(
            "header mismatch in the exact tier falls to the wildcard tier",
            vec![
                source(
                    ns,
                    "exact",
                    None,
                    vec![rule(&["a.example.com"], &[], &[("x-a", None)])],
                ),
                source(ns, "wild", None, vec![rule(&["*.example.com"], &[], &[])]),
            ],
            "a.example.com",
            "/",
            &[],
            Some("wild"),
        ),
        case(
            "a route without rules is unreachable",
            vec![source(ns, "none", None, vec![])],
            "h",
            "/",
            &[],
            None,
        ),
        case(
            "rules are OR-ed",
            vec![source(
                ns,
                "multi",
                None,
                vec![rule(&["a.com"], &[], &[]), rule(&["b.com"], &["/x"], &[])],
            )],
            "b.com",
            "/x/y",
            &[],
            Some("multi"),
        ),
        case(
            "IPv6 literal with port",
            vec![source(ns, "v6", None, vec![rule(&["[::1]"], &[], &[])])],
            "[::1]:8080",
            "/",
            &[],
            Some("v6"),
        ),
    ];
    for c in cases {
        let got = route_name(&c.routes, c.host, c.path, &c.headers);
        assert_eq!(got.as_deref(), c.want, "case {:?}", c.name);
    }
}

#[test]
fn interceptor_route_wins_a_name_clash() {
    let ir = interceptor_route(
        "ns",
        "app",
        valid_spec(vec![rule(&["ir.example.com"], &[], &[])]),
    );
    let so = |name: &str| httpso("ns", name, &["so.example.com"], &["/api"]);
    let sources = collect([&ir], [&so("app"), &so("other")]).sources;
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0].kind, RouteKind::InterceptorRoute);
    assert_eq!(sources[1].kind, RouteKind::HTTPScaledObject);
    assert_eq!(
        route_name(&sources, "ir.example.com", "/", &[]).as_deref(),
        Some("app")
    );
    assert_eq!(route_name(&sources, "so.example.com", "/", &[]), None);
    assert_eq!(
        route_name(&sources, "so.example.com", "/api/x", &[]).as_deref(),
        Some("other")
    );
    assert_eq!(
        target(&sources[1]),
        Target {
            namespace: "ns".into(),
            service: "other-svc".into(),
            port: TargetPort::Number(8080)
        }
    );
}

#[test]
fn invalid_routes_are_not_routed_and_do_not_shadow() {
    let mut bad = interceptor_route("ns", "app", valid_spec(vec![rule(&[], &[], &[])]));
    bad.spec.target.port = None;
    let so = httpso("ns", "app", &["so.example.com"], &[]);
    let sources = collect([&bad], [&so]).sources;
    assert_eq!(route_name(&sources, "other.example.com", "/", &[]), None);
    assert_eq!(
        route_name(&sources, "so.example.com", "/", &[]).as_deref(),
        Some("app")
    );
}

// ---- property test against a naive matcher ----

const HOSTS: &[&str] = &[
    "a.com",
    "b.a.com",
    "x.b.a.com",
    "c.com",
    "*.a.com",
    "*.b.a.com",
    "*",
    "",
    "A.com",
    "b.a.com:81",
];
const PATHS: &[&str] = &["/", "/api", "/api/v1", "/apiv2", "/b", "api/"];
const HEADER_NAMES: &[&str] = &["x-a", "X-B"];
const HEADER_VALUES: &[Option<&str>] = &[None, Some("1"), Some("2")];
const REQ_HOSTS: &[&str] = &[
    "a.com",
    "b.a.com",
    "x.b.a.com",
    "y.x.b.a.com",
    "c.com",
    "d.com",
    "localhost",
    "B.A.com:8080",
];
const REQ_PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/api/v1/x",
    "/apiv2",
    "/b/c",
    "/bc",
    "",
];

/// Rules over the given configured hosts, paths and header names (0–2 of each).
fn arb_rule_over(
    hosts: &'static [&'static str],
    paths: &'static [&'static str],
    header_names: &'static [&'static str],
) -> impl Strategy<Value = RoutingRule> {
    (
        prop::collection::vec(prop::sample::select(hosts), 0..3),
        prop::collection::vec(prop::sample::select(paths), 0..3),
        prop::collection::vec(
            (
                prop::sample::select(header_names),
                prop::sample::select(HEADER_VALUES),
            ),
            0..3,
        ),
    )
        .prop_map(|(hosts, paths, headers)| rule(&hosts, &paths, &headers))
}

/// 1–5 sources named `r<i>` in two namespaces, with or without a creation time, each with 0–2
/// rules from `rules`.
fn arb_sources_of(
    rules: impl Strategy<Value = RoutingRule>,
) -> impl Strategy<Value = Vec<RouteSource>> {
    prop::collection::vec(
        (
            prop::sample::select(&["a", "b"][..]),
            prop::option::of(prop::sample::select(&[100_i64, 200][..])),
            prop::collection::vec(rules, 0..3),
        ),
        1..6,
    )
    .prop_map(|routes| {
        routes
            .into_iter()
            .enumerate()
            .map(|(i, (ns, created, rules))| source(ns, &format!("r{i}"), created, rules))
            .collect()
    })
}

fn arb_sources() -> impl Strategy<Value = Vec<RouteSource>> {
    arb_sources_of(arb_rule_over(HOSTS, PATHS, HEADER_NAMES))
}

fn arb_request_headers() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    prop::collection::vec(
        (
            prop::sample::select(&["x-a", "x-b"][..]),
            prop::sample::select(&["1", "2"][..]),
        ),
        0..3,
    )
}

/// Host tier of a configured host for a request host: 0 exact, 1.. wildcard by specificity
/// (fewer labels stripped = lower), `usize::MAX - 1` catch-all, `None` no match.
fn naive_tier(pattern: &str, host: &str) -> Option<usize> {
    let pattern = normalise_host(pattern.trim());
    if pattern.is_empty() || pattern == "*" {
        return Some(usize::MAX - 1);
    }
    if let Some(suffix) = pattern.strip_prefix("*.") {
        let labels: Vec<&str> = host.split('.').collect();
        for stripped in 1..labels.len() {
            if labels[stripped..].join(".") == suffix {
                return Some(stripped);
            }
        }
        return None;
    }
    (pattern == host).then_some(0)
}

fn naive_path(prefix: &str, path: &str) -> Option<usize> {
    let p = prefix.trim_matches('/');
    let r = path.trim_matches('/');
    (p.is_empty() || r == p || r.starts_with(&format!("{p}/"))).then_some(p.len())
}

fn naive_headers(rule: &RoutingRule, headers: &HeaderMap) -> bool {
    rule.headers.iter().all(|m| {
        let name = m.name.to_ascii_lowercase();
        match &m.value {
            None => headers.contains_key(name.as_str()),
            Some(v) => headers
                .get_all(name.as_str())
                .iter()
                .any(|x| x.as_bytes() == v.as_bytes()),
        }
    })
}

fn naive_lookup(
    sources: &[RouteSource],
    host: &str,
    path: &str,
    headers: &HeaderMap,
) -> Option<usize> {
    let host = normalise_host(host);
    let mut best: Option<(usize, Reverse<usize>, _, usize)> = None;
    for (i, s) in sources.iter().enumerate() {
        for rule in &s.spec.rules {
            if !naive_headers(rule, headers) {
                continue;
            }
            let hosts: Vec<&str> = if rule.hosts.is_empty() {
                vec!["*"]
            } else {
                rule.hosts.iter().map(String::as_str).collect()
            };
            let paths: Vec<&str> = if rule.paths.is_empty() {
                vec!["/"]
            } else {
                rule.paths.iter().map(|p| p.value.as_str()).collect()
            };
            let valued = rule.headers.iter().filter(|h| h.value.is_some()).count();
            for h in &hosts {
                let Some(tier) = naive_tier(h, &host) else {
                    continue;
                };
                for p in &paths {
                    let Some(len) = naive_path(p, path) else {
                        continue;
                    };
                    let order = (
                        Reverse(rule.headers.len()),
                        Reverse(valued),
                        s.created.clone(),
                        Reverse(s.namespace.clone()),
                        Reverse(s.name.clone()),
                    );
                    let key = (tier, Reverse(len), order, i);
                    if best
                        .as_ref()
                        .is_none_or(|b| (&key.0, &key.1, &key.2) < (&b.0, &b.1, &b.2))
                    {
                        best = Some(key);
                    }
                }
            }
        }
    }
    best.map(|b| b.3)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn index_agrees_with_naive_matcher(
        sources in arb_sources(),
        host in prop::sample::select(REQ_HOSTS),
        path in prop::sample::select(REQ_PATHS),
        hdrs in arb_request_headers(),
    ) {
        let index = RouteIndex::build(&sources);
        let map = headers(&hdrs);
        let lowered = normalise_host(host);
        let got = index.lookup(&lowered, path, &map);
        let want = naive_lookup(&sources, host, path, &map);
        prop_assert_eq!(got, want);
    }
}

// ---- property test against the api crate's plain matcher ----

/// Configured hosts including the normalisation edge cases.
const EDGE_HOSTS: &[&str] = &[
    "a.com",
    "b.a.com",
    "*.a.com",
    "*.b.a.com",
    "*",
    "",
    "A.com.",
    "b.a.com:81",
    "[::1]:80",
    "::1",
    "a.com:abc",
    "*.",
    "*..",
];
const EDGE_PATHS: &[&str] = &["/", "/api", "/api/v1", "api/", "/a//b/", "/a"];
const EDGE_HEADER_NAMES: &[&str] = &["x-a", "X-B", "bad name"];
const EDGE_REQ_HOSTS: &[&str] = &[
    "a.com",
    "A.COM.",
    "b.a.com:8080",
    "x.b.a.com",
    ".a.com",
    "[::1]:8080",
    "::1",
    "a.com:abc",
    "localhost",
    "",
];
const EDGE_REQ_PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/api/v1/x",
    "/apiv2",
    "/a//b/c",
    "/a/b/c",
    "",
];

fn arb_edge_sources() -> impl Strategy<Value = Vec<RouteSource>> {
    arb_sources_of(arb_rule_over(EDGE_HOSTS, EDGE_PATHS, EDGE_HEADER_NAMES))
}

/// How good a match a rule that `rule_matches` accepted is, under the documented precedence
/// (smaller is better): host tier (exact, then wildcards by longer suffix, then catch-all),
/// longer path prefix, more header matchers, more valued header matchers.
type Rank = (
    u8,
    Reverse<usize>,
    Reverse<usize>,
    Reverse<usize>,
    Reverse<usize>,
);

fn best_rank(rule: &RoutingRule, host: &str, path: &str) -> Option<Rank> {
    use keda_http_api::routing::{HostPattern, path_has_prefix};
    let host = normalise_host(host);
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
    let valued = rule.headers.iter().filter(|h| h.value.is_some()).count();
    let mut best = None;
    for h in hosts.iter().filter(|h| h.matches(&host)) {
        let (tier, specificity) = match h {
            HostPattern::Exact(_) => (0, 0),
            HostPattern::Wildcard(suffix) => (1, suffix.len()),
            HostPattern::Any => (2, 0),
        };
        for p in paths.iter().filter(|p| path_has_prefix(path, p)) {
            let rank = (
                tier,
                Reverse(specificity),
                Reverse(p.len()),
                Reverse(rule.headers.len()),
                Reverse(valued),
            );
            if best.is_none_or(|b| rank < b) {
                best = Some(rank);
            }
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    /// The index (through [`RouteTable::route`]'s host handling) chooses only routes the plain
    /// matcher accepts, finds one whenever the plain matcher accepts any rule, and chooses one
    /// of the best-ranked accepted rules.
    #[test]
    fn index_agrees_with_the_api_matcher(
        sources in arb_edge_sources(),
        host in prop::sample::select(EDGE_REQ_HOSTS),
        path in prop::sample::select(EDGE_REQ_PATHS),
        hdrs in arb_request_headers(),
    ) {
        let index = RouteIndex::build(&sources);
        let map = headers(&hdrs);
        let got = index.lookup(&normalise_host(host), path, &map);
        let accepted = |s: &RouteSource| -> Option<Rank> {
            s.spec
                .rules
                .iter()
                .filter(|r| rule_matches(r, host, path, &map))
                .filter_map(|r| best_rank(r, host, path))
                .min()
        };
        let best = sources.iter().filter_map(accepted).min();
        match got {
            Some(i) => {
                let rank = accepted(&sources[i]);
                prop_assert!(rank.is_some(), "index chose {} which the matcher rejects", sources[i].name);
                prop_assert_eq!(rank, best, "index chose {} but a better rule matches", sources[i].name);
            }
            None => prop_assert!(best.is_none(), "the matcher accepts a rule the index missed"),
        }
    }
}
