//! OpenTelemetry shared by the interceptor and the scaler: the `OTEL_*` settings
//! ([`OtelArgs`] → [`OtelSettings`]), the trace pipeline ([`traces::Tracing`]: sampler, batch
//! span processor with a bounded queue, OTLP gRPC / HTTP-protobuf or console exporter, a
//! counter of spans that could not be exported) and the OTLP metrics push
//! ([`metrics::MetricsPush`]), which converts the Prometheus registry — the one source of
//! truth for the instruments — to OTLP at each export interval.
//!
//! It does not decide where spans start or end; the binaries do (the interceptor's request
//! phases, the scaler's gRPC layer).

pub mod args;
mod http;
pub mod metrics;
pub mod traces;

pub use args::{OtelArgs, OtelSettings, Protocol, SamplerSetting};

/// Why the OpenTelemetry set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// A setting has an invalid value; the message names the variable.
    #[error("{0}")]
    Invalid(String),
    /// The exporter could not be built.
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
}
