//! Prometheus metrics with the official names and labels (compat §8).
//!
//! - `interceptor_request_count_total{code,method,route_name,route_namespace}`: every request,
//!   404s included (empty route labels);
//! - `interceptor_request_duration_seconds{…,cold_start}`: receipt to the end of the response
//!   body, with the v0.16 buckets (5 ms to 300 s) and `cold_start="true"` when the request
//!   waited for its target to scale from zero;
//! - `interceptor_request_concurrency{route_name,route_namespace}`: counted requests in flight.
//!
//! Label values are bounded: `method` is normalised to the nine standard methods or `_OTHER`,
//! `code` is a status code, and route labels come only from installed routes.
//!
//! The request path does not hash label sets: each installed route carries a [`RouteMetrics`]
//! that resolves its metric handles once (lazily, on first use) and keeps them in fixed arrays
//! indexed by normalised method and by the common status codes. Other codes go through the
//! families as before; either way the same series are created with the same labels.

use std::fmt;
use std::sync::{Arc, OnceLock};

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The official duration buckets of v0.16, in seconds (compat §8): up to 300 s so that
/// requests held through a cold start do not all land in `+Inf`.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0,
    60.0, 120.0, 300.0,
];

/// The bounded `method` label values; [`MethodLabel`] indexes this.
const METHOD_LABELS: [&str; 10] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "_OTHER",
];

/// Status codes whose metric handles are cached per route and method; any other code is
/// looked up in the families on each request (same series, just slower).
const CACHED_CODES: [u16; 24] = [
    200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 413, 429, 499,
    500, 501, 502, 503, 504,
];

/// A normalised method: one of the nine standard methods or `_OTHER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodLabel(u8);

impl MethodLabel {
    /// Normalises `method`.
    pub fn of(method: &Method) -> Self {
        Self(match *method {
            Method::CONNECT => 0,
            Method::DELETE => 1,
            Method::GET => 2,
            Method::HEAD => 3,
            Method::OPTIONS => 4,
            Method::PATCH => 5,
            Method::POST => 6,
            Method::PUT => 7,
            Method::TRACE => 8,
            _ => 9,
        })
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        METHOD_LABELS[usize::from(self.0)]
    }
}

/// Normalises a method to a bounded label value.
pub fn method_label(method: &Method) -> &'static str {
    MethodLabel::of(method).as_str()
}

fn cached_code_index(code: u16) -> Option<usize> {
    CACHED_CODES.binary_search(&code).ok()
}

/// Route labels; empty for unmatched requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteLabels {
    /// Route name.
    pub name: Option<Arc<str>>,
    /// Route namespace.
    pub namespace: Option<Arc<str>>,
}

impl EncodeLabelSet for RouteLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("route_name", self.name.as_deref().unwrap_or("")).encode(encoder.encode_label())?;
        ("route_namespace", self.namespace.as_deref().unwrap_or("")).encode(encoder.encode_label())
    }
}

/// Labels of the request count.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RequestLabels {
    code: u16,
    method: &'static str,
    route: RouteLabels,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("code", u64::from(self.code)).encode(encoder.encode_label())?;
        ("method", self.method).encode(encoder.encode_label())?;
        self.route.encode(encoder)
    }
}

/// Labels of the request duration: the count's labels plus `cold_start`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct DurationLabels {
    request: RequestLabels,
    cold_start: bool,
}

impl EncodeLabelSet for DurationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        self.request.encode(encoder)?;
        ("cold_start", if self.cold_start { "true" } else { "false" })
            .encode(encoder.encode_label())
    }
}

/// The interceptor's metrics.
#[derive(Debug)]
pub struct Metrics {
    count: Family<RequestLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    concurrency: Family<RouteLabels, Gauge>,
    /// Handles of requests that matched no route (empty route labels).
    unrouted: RouteMetrics,
}

/// The count and duration handles of one label set.
#[derive(Debug)]
struct RequestHandles {
    count: Counter,
    duration: Histogram,
}

/// One route's metric handles, resolved on first use and then reused without hashing.
///
/// Each handle shares its value with the series in the [`Metrics`] families, so `/metrics`
/// is the same as if every request looked its labels up. Series still appear only once
/// something was recorded for them.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    labels: RouteLabels,
    concurrency: OnceLock<Gauge>,
    /// `2 (cold_start) × METHOD_LABELS.len() × CACHED_CODES.len()` slots, allocated on the
    /// first request.
    requests: OnceLock<Box<[OnceLock<RequestHandles>]>>,
}

impl RouteMetrics {
    /// Handles for a route with these labels.
    pub fn new(labels: RouteLabels) -> Self {
        Self {
            labels,
            ..Self::default()
        }
    }

    /// The route's labels.
    pub fn labels(&self) -> &RouteLabels {
        &self.labels
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    /// Creates the metrics and registers them, with the `process_*` collector, in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        keda_http_runtime::process::register(registry);
        let metrics = Self {
            count: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            concurrency: Family::default(),
            unrouted: RouteMetrics::default(),
        };
        registry.register(
            "interceptor_request_count",
            "Requests handled by the interceptor",
            metrics.count.clone(),
        );
        registry.register_with_unit(
            "interceptor_request_duration",
            "Time from receipt to the end of the response",
            prometheus_client::registry::Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "interceptor_request_concurrency",
            "Counted requests in flight",
            metrics.concurrency.clone(),
        );
        metrics
    }

    /// Records one finished request on `route` (`None`: matched no route); `cold_start`: the
    /// request waited for its target to scale from zero.
    pub fn record(
        &self,
        route: Option<&RouteMetrics>,
        code: u16,
        method: MethodLabel,
        cold_start: bool,
        seconds: f64,
    ) {
        let route = route.unwrap_or(&self.unrouted);
        let labels = || RequestLabels {
            code,
            method: method.as_str(),
            route: route.labels.clone(),
        };
        let cached = cached_code_index(code).and_then(|code_index| {
            let slots = route.requests.get_or_init(|| {
                (0..2 * METHOD_LABELS.len() * CACHED_CODES.len())
                    .map(|_| OnceLock::new())
                    .collect()
            });
            let cold = usize::from(cold_start) * METHOD_LABELS.len() * CACHED_CODES.len();
            slots.get(cold + usize::from(method.0) * CACHED_CODES.len() + code_index)
        });
        match cached {
            Some(slot) => {
                let handles = slot.get_or_init(|| {
                    let labels = labels();
                    RequestHandles {
                        count: self.count.get_or_create(&labels).clone(),
                        duration: self
                            .duration
                            .get_or_create(&DurationLabels {
                                request: labels,
                                cold_start,
                            })
                            .clone(),
                    }
                });
                handles.count.inc();
                handles.duration.observe(seconds);
            }
            None => {
                let labels = labels();
                self.count.get_or_create(&labels).inc();
                self.duration
                    .get_or_create(&DurationLabels {
                        request: labels,
                        cold_start,
                    })
                    .observe(seconds);
            }
        }
    }

    /// Adds `delta` to a route's in-flight gauge (`None`: matched no route).
    pub fn concurrency(&self, route: Option<&RouteMetrics>, delta: i64) {
        let route = route.unwrap_or(&self.unrouted);
        route
            .concurrency
            .get_or_init(|| self.concurrency.get_or_create(&route.labels).clone())
            .inc_by(delta);
    }
}

/// Encodes `registry` as Prometheus/OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_names_labels_and_buckets() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let route = RouteMetrics::new(RouteLabels {
            name: Some("app".into()),
            namespace: Some("ns".into()),
        });
        metrics.record(
            Some(&route),
            200,
            MethodLabel::of(&Method::GET),
            false,
            0.02,
        );
        metrics.record(
            Some(&route),
            200,
            MethodLabel::of(&Method::GET),
            true,
            200.0,
        );
        metrics.record(
            None,
            404,
            MethodLabel::of(&Method::from_bytes(b"BREW").expect("method")),
            false,
            0.001,
        );
        metrics.concurrency(Some(&route), 1);
        let text = encode(&registry);
        assert!(text.contains(
            "interceptor_request_count_total{code=\"200\",method=\"GET\",route_name=\"app\",route_namespace=\"ns\"} 2"
        ), "{text}");
        assert!(text.contains(
            "interceptor_request_count_total{code=\"404\",method=\"_OTHER\",route_name=\"\",route_namespace=\"\"} 1"
        ), "{text}");
        assert!(
            text.contains("interceptor_request_duration_seconds_bucket{le=\"7.5\",code=\"200\""),
            "{text}"
        );
        // The 300 s bucket holds the 200 s cold request; the 120 s bucket does not.
        let cold = "code=\"200\",method=\"GET\",route_name=\"app\",route_namespace=\"ns\",cold_start=\"true\"";
        assert!(
            text.contains(&format!(
                "interceptor_request_duration_seconds_bucket{{le=\"300.0\",{cold}}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "interceptor_request_duration_seconds_bucket{{le=\"120.0\",{cold}}} 0\n"
            )),
            "{text}"
        );
        assert!(text.contains("cold_start=\"false\"} 1\n"), "{text}");
        assert!(
            text.contains(
                "interceptor_request_concurrency{route_name=\"app\",route_namespace=\"ns\"} 1"
            ),
            "{text}"
        );
    }

    /// Cached handles (common codes) and uncached lookups (other codes) land in the same
    /// series as a plain family lookup would, for every method, code and route.
    #[test]
    fn cached_handles_match_family_series() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let route = RouteMetrics::new(RouteLabels {
            name: Some("app".into()),
            namespace: Some("ns".into()),
        });
        let methods = [
            Method::CONNECT,
            Method::DELETE,
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PATCH,
            Method::POST,
            Method::PUT,
            Method::TRACE,
            Method::from_bytes(b"BREW").expect("method"),
        ];
        let codes = [101, 200, 204, 418, 499, 504, 599];
        for method in &methods {
            for &code in &codes {
                for route in [Some(&route), None] {
                    metrics.record(route, code, MethodLabel::of(method), false, 0.02);
                    metrics.record(route, code, MethodLabel::of(method), false, 0.02);
                }
            }
        }
        // A second handle set for the same labels (a reinstalled route) shares the series.
        let again = RouteMetrics::new(route.labels().clone());
        metrics.record(
            Some(&again),
            200,
            MethodLabel::of(&Method::GET),
            false,
            0.02,
        );
        metrics.concurrency(Some(&route), 1);
        metrics.concurrency(Some(&again), 1);
        metrics.concurrency(None, 1);
        metrics.concurrency(None, -1);
        let text = encode(&registry);
        for method in &methods {
            let method = method_label(method);
            for &code in &codes {
                for (name, ns) in [("app", "ns"), ("", "")] {
                    let n = if (code, method, name) == (200, "GET", "app") {
                        3
                    } else {
                        2
                    };
                    let labels = format!(
                        "code=\"{code}\",method=\"{method}\",route_name=\"{name}\",route_namespace=\"{ns}\""
                    );
                    assert!(
                        text.contains(&format!(
                            "interceptor_request_count_total{{{labels}}} {n}\n"
                        )),
                        "{labels}\n{text}"
                    );
                    assert!(
                        text.contains(&format!(
                            "interceptor_request_duration_seconds_count{{{labels},cold_start=\"false\"}} {n}\n"
                        )),
                        "{labels}\n{text}"
                    );
                }
            }
        }
        assert_eq!(
            text.matches("interceptor_request_count_total{").count(),
            methods.len() * codes.len() * 2,
            "{text}"
        );
        assert!(
            text.contains(
                "interceptor_request_concurrency{route_name=\"app\",route_namespace=\"ns\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "interceptor_request_concurrency{route_name=\"\",route_namespace=\"\"} 0\n"
            ),
            "{text}"
        );
    }
}
