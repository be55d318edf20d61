//! Synthetic routing tables: InterceptorRoutes as JSON (the interceptor's routes-file format,
//! also deserialised into the API types by the micro benchmarks) and the matching endpoints
//! file.
//!
//! A table of `n` routes mixes the kinds a lookup can take, by `i % 10`: 0–6 an exact host
//! (`app-<i>.example.com`), 7 a wildcard (`*.tenant-<i>.example.org`), 8 path prefixes under
//! a host (`api-<i>.example.com` with `/v1/users` and `/v1/orders`), 9 a header matcher
//! (`hdr-<i>.example.com` with `x-canary: true`, and the same host without it).

use std::net::SocketAddr;

use serde_json::{Value, json};

/// The namespace of synthetic routes.
pub const NAMESPACE: &str = "bench";

/// What a lookup looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An exact host.
    Exact,
    /// A host under a wildcard.
    Wildcard,
    /// The longest of several path prefixes of a host.
    PathPrefix,
    /// A host whose first entry needs a header.
    Header,
    /// Nothing matches.
    Miss,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Self; 5] = [
        Self::Exact,
        Self::Wildcard,
        Self::PathPrefix,
        Self::Header,
        Self::Miss,
    ];

    /// Short name for ids and tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact_host",
            Self::Wildcard => "wildcard",
            Self::PathPrefix => "path_prefix",
            Self::Header => "header",
            Self::Miss => "miss",
        }
    }

    fn slot(self) -> Option<usize> {
        match self {
            Self::Exact => Some(6),
            Self::Wildcard => Some(7),
            Self::PathPrefix => Some(8),
            Self::Header => Some(9),
            Self::Miss => None,
        }
    }
}

/// A request to look up: host, path, and an optional header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `Host`.
    pub host: String,
    /// Path.
    pub path: String,
    /// Extra header (name, value).
    pub header: Option<(&'static str, &'static str)>,
    /// The route name it should find (`None` for a miss).
    pub expect: Option<String>,
}

/// The query that exercises `kind` in a table of `n` routes (the last route of that kind).
pub fn query(kind: Kind, n: usize) -> Query {
    let Some(slot) = kind.slot() else {
        return Query {
            host: "unknown.example.net".into(),
            path: "/x/y".into(),
            header: None,
            expect: None,
        };
    };
    // The largest i < n with i % 10 == slot (tables smaller than 10 get slot mod n).
    let i = if n > slot {
        (n - 1 - slot) / 10 * 10 + slot
    } else {
        slot % n.max(1)
    };
    let (host, path, header) = match kind {
        Kind::Exact => (format!("app-{i}.example.com"), "/".to_owned(), None),
        Kind::Wildcard => (format!("a.b.tenant-{i}.example.org"), "/".to_owned(), None),
        Kind::PathPrefix => (
            format!("api-{i}.example.com"),
            "/v1/orders/123/items".to_owned(),
            None,
        ),
        Kind::Header => (
            format!("hdr-{i}.example.com"),
            "/".to_owned(),
            Some(("x-canary", "true")),
        ),
        Kind::Miss => unreachable!("handled above"),
    };
    Query {
        host,
        path,
        header,
        expect: Some(name(i)),
    }
}

/// The name of route `i`.
pub fn name(i: usize) -> String {
    format!("r-{i}")
}

/// One InterceptorRoute as JSON, targeting Service `service` port `port`.
pub fn route(name: &str, service: &str, port: u16, rules: Value) -> Value {
    json!({
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "InterceptorRoute",
        "metadata": {"namespace": NAMESPACE, "name": name},
        "spec": {
            "target": {"service": service, "port": port},
            "rules": rules,
            "scalingMetric": {"concurrency": {"targetValue": 100}},
        }
    })
}

/// `n` synthetic routes (see the module doc), route `i` targeting Service `r-<i>` port 8080.
pub fn synthetic(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let rules = match i % 10 {
                7 => json!([{"hosts": [format!("*.tenant-{i}.example.org")]}]),
                8 => json!([{
                    "hosts": [format!("api-{i}.example.com")],
                    "paths": [{"value": "/v1/users"}, {"value": "/v1/orders"}],
                }]),
                9 => json!([
                    {"hosts": [format!("hdr-{i}.example.com")],
                     "headers": [{"name": "x-canary", "value": "true"}]},
                    {"hosts": [format!("hdr-{i}.example.com")]},
                ]),
                _ => json!([{"hosts": [format!("app-{i}.example.com")]}]),
            };
            route(&name(i), &name(i), 8080, rules)
        })
        .collect()
}

/// An endpoints file giving every `(service, port)` the ready addresses `addrs`.
pub fn endpoints_file<'a>(
    services: impl IntoIterator<Item = (&'a str, u16)>,
    addrs: &[SocketAddr],
) -> Value {
    let addresses: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    Value::Object(
        services
            .into_iter()
            .map(|(svc, port)| {
                (
                    format!("{NAMESPACE}/{svc}/{port}"),
                    json!({"addresses": addresses}),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_pick_the_last_route_of_their_kind() {
        assert_eq!(query(Kind::Exact, 10).expect.as_deref(), Some("r-6"));
        assert_eq!(query(Kind::Header, 10).expect.as_deref(), Some("r-9"));
        assert_eq!(query(Kind::Exact, 10_000).expect.as_deref(), Some("r-9996"));
        assert_eq!(
            query(Kind::Wildcard, 10_000).host,
            "a.b.tenant-9997.example.org"
        );
        assert_eq!(query(Kind::PathPrefix, 1000).host, "api-998.example.com");
        assert_eq!(query(Kind::Header, 1000).expect.as_deref(), Some("r-999"));
        assert_eq!(query(Kind::Miss, 10).expect, None);
    }

    #[test]
    fn synthetic_tables_have_every_kind() {
        let routes = synthetic(10);
        assert_eq!(routes.len(), 10);
        assert_eq!(
            routes[6]["spec"]["rules"][0]["hosts"][0],
            "app-6.example.com"
        );
        assert_eq!(
            routes[7]["spec"]["rules"][0]["hosts"][0],
            "*.tenant-7.example.org"
        );
        assert_eq!(
            routes[8]["spec"]["rules"][0]["paths"][1]["value"],
            "/v1/orders"
        );
        assert_eq!(
            routes[9]["spec"]["rules"][0]["headers"][0]["name"],
            "x-canary"
        );
        assert_eq!(routes[9]["metadata"]["namespace"], NAMESPACE);
    }

    #[test]
    fn endpoints_file_keys() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let file = endpoints_file([("r-1", 8080)], &[addr]);
        assert_eq!(file["bench/r-1/8080"]["addresses"][0], "127.0.0.1:9");
    }
}
