//! Prometheus metrics with the official scaler's names (compat §8), and the `/metrics`
//! endpoint.
//!
//! | name | type | meaning |
//! | --- | --- | --- |
//! | `scaler_pinger_fetch_duration_seconds` | histogram | duration of one poll cycle |
//! | `scaler_pinger_fetch_errors_total` | counter | poll cycles in which no interceptor answered |
//! | `scaler_pinger_unreachable_pods` | gauge | interceptors whose last poll failed |
//! | `scaler_pinger_endpoints` | gauge | interceptors in the admin EndpointSlices |
//! | `scaler_push_streams` | gauge | connected `/queue/watch` streams (ours) |

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use keda_http_runtime::serve::Limits;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Histogram buckets of the fetch duration, as upstream (0.005 … 5 s).
const FETCH_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
];

/// The scaler's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Duration of a poll cycle, in seconds.
    pub fetch_duration: Histogram,
    /// Poll cycles where every interceptor failed (or none was known).
    pub fetch_errors: Counter,
    /// Interceptors whose last poll failed.
    pub unreachable_pods: Gauge,
    /// Interceptors known from the EndpointSlices.
    pub endpoints: Gauge,
    /// Connected push streams.
    pub push_streams: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            fetch_duration: Histogram::new(FETCH_BUCKETS),
            fetch_errors: Counter::default(),
            unreachable_pods: Gauge::default(),
            endpoints: Gauge::default(),
            push_streams: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        keda_http_runtime::process::register(registry);
        let metrics = Self::default();
        registry.register(
            "scaler_pinger_fetch_duration_seconds",
            "Duration of one /queue poll cycle over every interceptor",
            metrics.fetch_duration.clone(),
        );
        registry.register(
            "scaler_pinger_fetch_errors",
            "Poll cycles in which no interceptor answered",
            metrics.fetch_errors.clone(),
        );
        registry.register(
            "scaler_pinger_unreachable_pods",
            "Interceptor pods whose last poll failed",
            metrics.unreachable_pods.clone(),
        );
        registry.register(
            "scaler_pinger_endpoints",
            "Interceptor pods listed in the admin EndpointSlices",
            metrics.endpoints.clone(),
        );
        registry.register(
            "scaler_push_streams",
            "Connected /queue/watch push streams",
            metrics.push_streams.clone(),
        );
        metrics
    }
}

/// Renders `registry` in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes, then lets open
/// connections finish.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let stop = CancellationToken::new();
    let handler = move |request: Request<Incoming>, _peer: SocketAddr| {
        let registry = Arc::clone(&registry);
        async move { respond(&request, &registry) }
    };
    let server = keda_http_runtime::serve::serve(
        listener,
        keda_http_runtime::serve::builder(Limits::default()),
        None,
        handler,
        stop.clone(),
        CancellationToken::new(),
    );
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => return,
        () = shutdown => stop.cancel(),
    }
    server.await;
}

fn respond(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if request.uri().path() != "/metrics" {
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return response;
    }
    *response.body_mut() = Full::new(Bytes::from(render(registry)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_names_are_exposed() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.fetch_errors.inc();
        metrics.endpoints.set(3);
        metrics.fetch_duration.observe(0.02);
        let text = render(&registry);
        for name in [
            "scaler_pinger_fetch_duration_seconds_bucket",
            "scaler_pinger_fetch_errors_total 1",
            "scaler_pinger_unreachable_pods 0",
            "scaler_pinger_endpoints 3",
            "scaler_push_streams 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
