//! Request traces and OTLP metrics of the interceptor (`OTEL_EXPORTER_OTLP_TRACES_ENABLED`,
//! `OTEL_EXPORTER_OTLP_METRICS_ENABLED`; the pipelines come from
//! [`keda_http_runtime::otel`]).
//!
//! A traced request carries a [`RequestTrace`] in its extensions: the server span (HTTP
//! semantic conventions: method, route key, status, peer), parented on the client's W3C
//! `traceparent`/`tracestate`. The `admit` phase adds a `cold-start wait` child (held time and
//! outcome: woke / placeholder / fallback / timeout / overflow) and `forward` an `upstream
//! attempt` child per attempt (endpoint, retry number), whose context is injected into the
//! forwarded request. With tracing off nothing is inserted, and each hook is one `None` check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use keda_http_runtime::otel::metrics::MetricsPush;
use keda_http_runtime::otel::traces::Tracing;
use keda_http_runtime::otel::{OtelError, OtelSettings};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::routing::Route;

/// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "keda-http-interceptor";
/// The instrumentation scope of spans and metrics.
const SCOPE: &str = "keda-interceptor-proxy";

/// The interceptor's telemetry pipelines, as configured.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// The trace pipeline, when tracing is on.
    pub tracing: Option<Arc<RequestTracer>>,
    /// The OTLP metrics push, when on.
    pub metrics: Option<MetricsPush>,
}

/// The resolved OpenTelemetry settings of `config`.
pub fn settings(config: &Config) -> Result<OtelSettings, OtelError> {
    config.otel.settings(
        config.otel_exporter_otlp_traces_enabled,
        &config.otel_exporter_otlp_traces_protocol,
        config.otel_exporter_otlp_metrics_enabled,
        SERVICE_NAME,
    )
}

/// Starts tracing if `config` enables it, registering the dropped-span counter
/// (`interceptor_otel_dropped_spans_total`) in `registry`.
pub fn start_tracing(
    config: &Config,
    registry: &mut Registry,
) -> Result<Option<Arc<RequestTracer>>, OtelError> {
    let settings = settings(config)?;
    if !settings.traces_enabled {
        return Ok(None);
    }
    let tracing = Tracing::start(&settings, SCOPE)?;
    registry.register(
        "interceptor_otel_dropped_spans",
        "Spans dropped because their export to the OTLP collector failed",
        tracing.dropped_spans(),
    );
    Ok(Some(Arc::new(RequestTracer::new(tracing))))
}

/// The OTLP metrics push of `registry`, if `config` enables it.
pub fn metrics_push(
    config: &Config,
    registry: &Arc<Registry>,
) -> Result<Option<MetricsPush>, OtelError> {
    let settings = settings(config)?;
    if !settings.metrics_enabled {
        return Ok(None);
    }
    MetricsPush::new(&settings, SCOPE, Arc::clone(registry)).map(Some)
}

/// Starts the spans of requests.
#[derive(Debug)]
pub struct RequestTracer {
    pipeline: Tracing,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl RequestTracer {
    /// Spans from `pipeline`.
    pub fn new(pipeline: Tracing) -> Self {
        Self {
            tracer: pipeline.tracer().clone(),
            pipeline,
            propagator: TraceContextPropagator::new(),
        }
    }

    /// The pipeline (flush, shutdown, dropped-span counter).
    pub fn pipeline(&self) -> &Tracing {
        &self.pipeline
    }

    /// Starts the server span of `req` from `client` (over TLS when `tls`), a child of the
    /// client's `traceparent` if any, and puts it in the request's extensions.
    pub fn start<B>(
        self: &Arc<Self>,
        req: &mut Request<B>,
        client: SocketAddr,
        tls: bool,
    ) -> RequestTrace {
        let parent = self.propagator.extract(&Headers(req.headers()));
        let mut attributes = vec![
            KeyValue::new("http.request.method", req.method().as_str().to_owned()),
            KeyValue::new("url.path", req.uri().path().to_owned()),
            KeyValue::new("url.scheme", if tls { "https" } else { "http" }),
            KeyValue::new("client.address", client.ip().to_string()),
            KeyValue::new("client.port", i64::from(client.port())),
            KeyValue::new("network.protocol.version", version(req.version())),
        ];
        if let Some(host) = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
        {
            attributes.push(KeyValue::new("server.address", host.to_owned()));
        }
        let span = self
            .tracer
            .span_builder(format!("{} keda-http-interceptor", req.method()))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        let trace = RequestTrace {
            cx: parent.with_span(span),
            tracer: Arc::clone(self),
        };
        req.extensions_mut().insert(trace.clone());
        trace
    }
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// The trace of one request: its server span's context.
#[derive(Clone)]
pub struct RequestTrace {
    cx: Context,
    tracer: Arc<RequestTracer>,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("span", self.cx.span().span_context())
            .finish()
    }
}

impl RequestTrace {
    /// The trace of `req`, if it is traced.
    pub fn of<B>(req: &Request<B>) -> Option<&Self> {
        req.extensions().get()
    }

    /// Records the matched route (`http.route`: the route key).
    pub fn set_route(&self, route: &Route) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("http.route", route.key.to_string()));
        span.set_attribute(KeyValue::new(
            "keda_http.route.namespace",
            route.source.namespace.clone(),
        ));
    }

    /// Ends the server span with the response status.
    pub fn end(self, status: http::StatusCode) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_status(Status::error(""));
            span.set_attribute(KeyValue::new("error.type", status.as_str().to_owned()));
        }
        span.end();
    }

    /// Starts the cold-start wait span.
    pub fn cold_start(&self) -> ColdStartSpan {
        let span = self
            .tracer
            .tracer
            .span_builder("cold-start wait")
            .with_kind(SpanKind::Internal)
            .start_with_context(&self.tracer.tracer, &self.cx);
        ColdStartSpan {
            cx: self.cx.with_span(span),
            started: Instant::now(),
        }
    }

    /// Records a cold start that did not wait (`placeholder`, `overflow`).
    pub fn cold_start_answered(&self, outcome: &'static str) {
        self.cold_start().end(outcome);
    }

    /// Starts the span of upstream attempt `attempt` (0: the first) to `endpoint`.
    pub fn attempt<'s>(&'s self, endpoint: Endpoint<'_>, attempt: usize) -> AttemptSpan<'s> {
        let mut attributes = vec![
            KeyValue::new("keda_http.upstream.attempt", attempt as i64),
            KeyValue::new("http.request.resend_count", attempt as i64),
        ];
        match endpoint {
            Endpoint::Addr(addr) => {
                attributes.push(KeyValue::new("server.address", addr.ip().to_string()));
                attributes.push(KeyValue::new("server.port", i64::from(addr.port())));
            }
            Endpoint::Authority(authority) => {
                attributes.push(KeyValue::new("server.address", authority.to_owned()));
            }
        }
        let span = self
            .tracer
            .tracer
            .span_builder("upstream attempt")
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer.tracer, &self.cx);
        AttemptSpan {
            cx: self.cx.with_span(span),
            propagator: &self.tracer.propagator,
        }
    }
}

/// Where an upstream attempt goes.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint<'a> {
    /// A ready endpoint's address.
    Addr(SocketAddr),
    /// The Service authority `<svc>.<ns>:<port>`.
    Authority(&'a str),
}

/// The cold-start wait of one request.
#[derive(Debug)]
pub struct ColdStartSpan {
    cx: Context,
    started: Instant,
}

impl ColdStartSpan {
    /// Ends the wait with its outcome.
    pub fn end(self, outcome: &'static str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("keda_http.cold_start.outcome", outcome));
        span.set_attribute(KeyValue::new(
            "keda_http.cold_start.held_ms",
            i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
        ));
        if matches!(outcome, "timeout" | "overflow") {
            span.set_status(Status::error(outcome));
        }
        span.end();
    }

    /// Ends the wait with the outcome of a hold: the target woke (`Some(true)`), the fallback
    /// (`None`), or a timeout.
    pub fn end_hold<T, E>(self, held: &Result<(T, Option<bool>), E>) {
        self.end(match held {
            Ok((_, Some(_))) => "woke",
            Ok((_, None)) => "fallback",
            Err(_) => "timeout",
        });
    }
}

/// One upstream attempt; the span ends when this is dropped.
#[derive(Debug)]
pub struct AttemptSpan<'t> {
    cx: Context,
    propagator: &'t TraceContextPropagator,
}

impl AttemptSpan<'_> {
    /// Writes this attempt's `traceparent`/`tracestate` into the forwarded headers.
    pub fn inject(&self, headers: &mut HeaderMap) {
        self.propagator
            .inject_context(&self.cx, &mut HeadersMut(headers));
    }

    /// Records the upstream response status.
    pub fn status(&self, status: http::StatusCode) {
        self.cx.span().set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
    }

    /// Records why the attempt failed.
    pub fn fail(&self, error: &dyn std::fmt::Display) {
        let span = self.cx.span();
        span.set_status(Status::error(error.to_string()));
        span.set_attribute(KeyValue::new("error.type", "connect"));
    }
}

impl Drop for AttemptSpan<'_> {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

impl Telemetry {
    /// Starts the metrics push (if on); [`Started::stop`] ends it and flushes the spans.
    pub fn start(self) -> Started {
        let stop = tokio_util::sync::CancellationToken::new();
        let push = self
            .metrics
            .map(|push| tokio::spawn(push.run(stop.clone())));
        Started {
            stop,
            push,
            tracing: self.tracing,
        }
    }
}

/// Running telemetry of a running interceptor.
#[derive(Debug)]
pub struct Started {
    stop: tokio_util::sync::CancellationToken,
    push: Option<tokio::task::JoinHandle<()>>,
    tracing: Option<Arc<RequestTracer>>,
}

impl Started {
    /// Pushes the metrics a last time and exports the buffered spans (bounded waits).
    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(push) = self.push {
            let _ = push.await;
        }
        if let Some(tracing) = self.tracing {
            // The SDK's shutdown blocks its caller while the export runs on this runtime.
            let _ = tokio::task::spawn_blocking(move || tracing.pipeline().shutdown()).await;
        }
    }
}
