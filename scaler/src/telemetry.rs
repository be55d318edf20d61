//! OpenTelemetry of the scaler: a server span per gRPC call when
//! `OTEL_EXPORTER_OTLP_TRACES_ENABLED` is on ([`TraceLayer`], a tower layer on the tonic
//! server), and the settings of the OTLP metrics push. The pipelines come from
//! [`keda_http_runtime::otel`].
//!
//! A span is named after the gRPC method (`externalscaler.ExternalScaler/IsActive`), is a
//! child of the caller's W3C `traceparent`, carries `rpc.system`, `rpc.service`, `rpc.method`
//! and `rpc.grpc.status_code`, and ends when the response headers are sent (for
//! `StreamIsActive`, when the stream opens).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::future::Either;
use http::{HeaderMap, Request, Response};
use keda_http_runtime::otel::{OtelError, OtelSettings};
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;

use crate::config::Config;

/// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "keda-http-external-scaler";
/// The instrumentation scope of spans and metrics.
pub const SCOPE: &str = "keda-external-scaler";

/// The resolved OpenTelemetry settings of `config`.
pub fn settings(config: &Config) -> Result<OtelSettings, OtelError> {
    config.otel.settings(
        config.otlp_traces_enabled,
        &config.otlp_traces_protocol,
        config.otlp_metrics_enabled,
        SERVICE_NAME,
    )
}

/// Traces every gRPC call with its tracer; without one, calls pass through untouched.
#[derive(Debug, Clone, Default)]
pub struct TraceLayer {
    tracer: Option<SdkTracer>,
}

impl TraceLayer {
    /// Spans from `tracer` (none: no span work).
    pub fn new(tracer: Option<SdkTracer>) -> Self {
        Self { tracer }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            tracer: self.tracer.clone(),
        }
    }
}

/// A gRPC service with a server span per call.
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    tracer: Option<SdkTracer>,
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<Request<B>> for Traced<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Boxed<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(tracer) = &self.tracer else {
            return Either::Left(self.inner.call(req));
        };
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        let path = req.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let mut span = tracer
            .span_builder(path.to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", method.to_owned()),
            ])
            .start_with_context(tracer, &parent);
        let call = self.inner.call(req);
        Either::Right(Box::pin(async move {
            let result = call.await;
            match &result {
                Ok(response) => {
                    // Trailers-only answers (errors) carry the status in the headers; a
                    // streamed OK has it in the trailers, after the span.
                    let code = grpc_status(response.headers()).unwrap_or(0);
                    span.set_attribute(KeyValue::new("rpc.grpc.status_code", code));
                    if code != 0 {
                        span.set_status(Status::error(format!("gRPC status {code}")));
                    }
                }
                Err(_) => span.set_status(Status::error("transport error")),
            }
            span.end();
            result
        }))
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i64> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use tower::{Layer as _, Service as _};

    use super::*;

    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    async fn call(layer: &TraceLayer, traceparent: Option<&str>, status: &str) {
        let status = status.to_owned();
        let inner = tower::service_fn(move |_req: Request<()>| {
            let status = status.clone();
            async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("grpc-status", status)
                        .body(())
                        .unwrap(),
                )
            }
        });
        let mut service = layer.layer(inner);
        let mut req =
            Request::builder().uri("http://scaler/externalscaler.ExternalScaler/IsActive");
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        service.call(req.body(()).unwrap()).await.unwrap();
    }

    #[tokio::test]
    async fn calls_become_server_spans_under_the_callers_trace() {
        let spans = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let layer = TraceLayer::new(Some(provider.tracer("test")));
        call(
            &layer,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "0",
        )
        .await;
        call(&layer, None, "5").await;

        let spans = spans.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 2);
        let first = &spans[0];
        assert_eq!(first.name, "externalscaler.ExternalScaler/IsActive");
        assert_eq!(first.span_kind, SpanKind::Server);
        assert_eq!(
            first.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(first.parent_span_id.to_string(), "00f067aa0ba902b7");
        let attr = |s: &SpanData, k: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attr(first, "rpc.method").as_deref(), Some("IsActive"));
        assert_eq!(
            attr(first, "rpc.service").as_deref(),
            Some("externalscaler.ExternalScaler")
        );
        assert_eq!(attr(first, "rpc.grpc.status_code").as_deref(), Some("0"));
        assert_eq!(
            attr(&spans[1], "rpc.grpc.status_code").as_deref(),
            Some("5")
        );
        assert!(matches!(spans[1].status, Status::Error { .. }));
    }

    #[tokio::test]
    async fn without_a_tracer_calls_pass_through() {
        call(&TraceLayer::default(), None, "0").await;
    }
}
