//! The trace pipeline: sampler, a batch span processor with a bounded queue on its own thread
//! (ending a span never waits for the network), and the exporter chosen by
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`. Exports run on the tokio runtime that started the
//! pipeline; spans whose export fails (collector down, timeout) are dropped and counted.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, Value};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter,
};
use prometheus_client::metrics::counter::Counter;

use super::OtelError;
use super::args::{OtelSettings, ParentRoot, Protocol, SamplerSetting};
use super::http::ExportClient;

/// Spans buffered for export; more are dropped (the request path never waits).
pub const MAX_QUEUED_SPANS: usize = 2048;
/// How long shutdown waits for the last export.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A running trace pipeline.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    dropped: Counter,
}

impl Tracing {
    /// Starts the pipeline `settings` describe, naming the tracer `scope`. Must run inside a
    /// tokio runtime (exports run on it).
    pub fn start(settings: &OtelSettings, scope: &'static str) -> Result<Self, OtelError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| OtelError::Exporter("no tokio runtime to export on".into()))?;
        let dropped = Counter::default();
        let provider = match settings.traces_protocol {
            Protocol::Console => provider(settings, runtime, dropped.clone(), Console),
            Protocol::Grpc => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &settings.traces_headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                        .map_err(|e| invalid_header(k, &e))?;
                    let value = v.parse().map_err(|e| invalid_header(k, &e))?;
                    metadata.insert(key, value);
                }
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(settings.traces_endpoint.clone())
                    .with_timeout(settings.traces_timeout)
                    .with_metadata(metadata)
                    .build()
                    .map_err(|e| OtelError::Exporter(e.to_string()))?;
                provider(settings, runtime, dropped.clone(), exporter)
            }
            Protocol::HttpProtobuf => {
                let client = ExportClient::new(settings.traces_timeout)
                    .ok_or_else(|| OtelError::Exporter("no tokio runtime".into()))?;
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(settings.traces_endpoint.clone())
                    .with_timeout(settings.traces_timeout)
                    .with_headers(
                        settings
                            .traces_headers
                            .iter()
                            .cloned()
                            .collect::<HashMap<_, _>>(),
                    )
                    .with_http_client(client)
                    .build()
                    .map_err(|e| OtelError::Exporter(e.to_string()))?;
                provider(settings, runtime, dropped.clone(), exporter)
            }
        };
        let tracer = provider.tracer(scope);
        Ok(Self {
            provider,
            tracer,
            dropped,
        })
    }

    /// The tracer spans start from.
    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Spans dropped because their export failed.
    pub fn dropped_spans(&self) -> Counter {
        self.dropped.clone()
    }

    /// Exports what is buffered now (blocking; call from a blocking context or at exit).
    pub fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::debug!(%error, "flushing spans failed");
        }
    }

    /// Exports what is buffered and stops, waiting a bounded time.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_WAIT) {
            tracing::debug!(%error, "stopping the trace exporter failed");
        }
    }
}

fn invalid_header(key: &str, error: &dyn std::fmt::Display) -> OtelError {
    OtelError::Invalid(format!(
        "invalid OTEL_EXPORTER_OTLP_TRACES_HEADERS: header {key:?}: {error}"
    ))
}

/// The resource every signal of this process carries.
pub fn resource(settings: &OtelSettings) -> Resource {
    Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attributes(
            settings
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build()
}

fn sampler(setting: SamplerSetting) -> Sampler {
    let root = |r: ParentRoot| match r {
        ParentRoot::AlwaysOn => Sampler::AlwaysOn,
        ParentRoot::AlwaysOff => Sampler::AlwaysOff,
        ParentRoot::Ratio(r) => Sampler::TraceIdRatioBased(r),
    };
    match setting {
        SamplerSetting::AlwaysOn => Sampler::AlwaysOn,
        SamplerSetting::AlwaysOff => Sampler::AlwaysOff,
        SamplerSetting::Ratio(r) => Sampler::TraceIdRatioBased(r),
        SamplerSetting::ParentBased(r) => Sampler::ParentBased(Box::new(root(r))),
    }
}

fn provider<E: SpanExporter + 'static>(
    settings: &OtelSettings,
    runtime: tokio::runtime::Handle,
    dropped: Counter,
    exporter: E,
) -> SdkTracerProvider {
    let exporter = Counted {
        inner: Arc::new(exporter),
        dropped,
        runtime,
    };
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUED_SPANS)
                .with_scheduled_delay(Duration::from_secs(1))
                .build(),
        )
        .build();
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(settings.sampler))
        .with_resource(resource(settings))
        .build()
}

/// An exporter run on the tokio runtime, counting the spans of failed exports.
#[derive(Debug)]
struct Counted<E> {
    inner: Arc<E>,
    dropped: Counter,
    runtime: tokio::runtime::Handle,
}

impl<E: SpanExporter + 'static> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let inner = Arc::clone(&self.inner);
        let result = match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(result) => result,
            Err(error) => Err(OTelSdkError::InternalFailure(error.to_string())),
        };
        if let Err(error) = &result {
            self.dropped.inc_by(spans);
            tracing::debug!(%error, spans, "span export failed; spans dropped");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// `console`: one line per span on stdout.
#[derive(Debug)]
struct Console;

impl SpanExporter for Console {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut out = String::new();
        for span in &batch {
            let duration = span
                .end_time
                .duration_since(span.start_time)
                .unwrap_or_default();
            let _ = write!(
                out,
                "span name={:?} trace_id={} span_id={} parent_id={} kind={:?} duration_us={}",
                span.name,
                span.span_context.trace_id(),
                span.span_context.span_id(),
                span.parent_span_id,
                span.span_kind,
                duration.as_micros(),
            );
            for kv in &span.attributes {
                let _ = match &kv.value {
                    Value::String(s) => write!(out, " {}={:?}", kv.key, s.as_str()),
                    other => write!(out, " {}={other}", kv.key),
                };
            }
            out.push('\n');
        }
        std::io::stdout()
            .lock()
            .write_all(out.as_bytes())
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }
}
