//! Prometheus metrics with the official names and labels (reference §8).
//!
//! - `interceptor_request_count_total{code,method,route_name,route_namespace}`: every request,
//!   404s included (empty route labels);
//! - `interceptor_request_duration_seconds{…}`: receipt to the end of the response body, with
//!   the official buckets;
//! - `interceptor_request_concurrency{route_name,route_namespace}`: counted requests in flight.
//!
//! Label values are bounded: `method` is normalised to the nine standard methods or `_OTHER`,
//! `code` is a status code, and route labels come only from installed routes.

use std::fmt;
use std::sync::Arc;

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The official duration buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Normalises a method to a bounded label value.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::CONNECT => "CONNECT",
        Method::DELETE => "DELETE",
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
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

/// Labels of the request count and duration.
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

/// The interceptor's metrics.
#[derive(Debug)]
pub struct Metrics {
    count: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    concurrency: Family<RouteLabels, Gauge>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            count: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            concurrency: Family::default(),
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

    /// Records one finished request.
    pub fn record(&self, code: u16, method: &'static str, route: RouteLabels, seconds: f64) {
        let labels = RequestLabels {
            code,
            method,
            route,
        };
        self.count.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }

    /// Adds `delta` to a route's in-flight gauge.
    pub fn concurrency(&self, route: &RouteLabels, delta: i64) {
        self.concurrency.get_or_create(route).inc_by(delta);
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
        let route = RouteLabels {
            name: Some("app".into()),
            namespace: Some("ns".into()),
        };
        metrics.record(200, method_label(&Method::GET), route.clone(), 0.02);
        metrics.record(
            404,
            method_label(&Method::from_bytes(b"BREW").expect("method")),
            RouteLabels::default(),
            0.001,
        );
        metrics.concurrency(&route, 1);
        let text = encode(&registry);
        assert!(text.contains(
            "interceptor_request_count_total{code=\"200\",method=\"GET\",route_name=\"app\",route_namespace=\"ns\"} 1"
        ), "{text}");
        assert!(text.contains(
            "interceptor_request_count_total{code=\"404\",method=\"_OTHER\",route_name=\"\",route_namespace=\"\"} 1"
        ), "{text}");
        assert!(
            text.contains("interceptor_request_duration_seconds_bucket{le=\"7.5\",code=\"200\""),
            "{text}"
        );
        assert!(
            text.contains(
                "interceptor_request_concurrency{route_name=\"app\",route_namespace=\"ns\"} 1"
            ),
            "{text}"
        );
    }
}
