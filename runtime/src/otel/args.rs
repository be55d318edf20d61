//! The standard OpenTelemetry SDK variables, as flags with their `OTEL_*` variable, and the
//! settings the pipelines are built from. The on/off switches and the traces protocol stay with
//! each binary's own settings (they already parse them); [`OtelArgs::settings`] joins both.

use std::time::Duration;

use clap::Args;

use super::OtelError;

/// Default OTLP/gRPC collector address.
const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// Default OTLP/HTTP collector address.
const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318";

/// The standard SDK variables (traces and metrics export).
#[derive(Args, Debug, Clone, Default)]
pub struct OtelArgs {
    /// OTLP collector base address for traces and metrics (http/protobuf appends /v1/traces
    /// and /v1/metrics) [default: http://localhost:4318, grpc: http://localhost:4317].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", hide_short_help = true)]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// OTLP traces address, used as is (overrides the base address).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        hide_short_help = true
    )]
    pub otel_exporter_otlp_traces_endpoint: Option<String>,

    /// OTLP metrics address, used as is (overrides the base address).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        hide_short_help = true
    )]
    pub otel_exporter_otlp_metrics_endpoint: Option<String>,

    /// Headers sent with every export, `key=value,key2=value2`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", hide_short_help = true)]
    pub otel_exporter_otlp_headers: Option<String>,

    /// Headers of trace exports (added to, and overriding, OTEL_EXPORTER_OTLP_HEADERS).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        hide_short_help = true
    )]
    pub otel_exporter_otlp_traces_headers: Option<String>,

    /// Headers of metric exports (added to, and overriding, OTEL_EXPORTER_OTLP_HEADERS).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        hide_short_help = true
    )]
    pub otel_exporter_otlp_metrics_headers: Option<String>,

    /// Timeout of one export, in milliseconds [default: 10000].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", hide_short_help = true)]
    pub otel_exporter_otlp_timeout: Option<u64>,

    /// Timeout of one trace export, in milliseconds (overrides OTEL_EXPORTER_OTLP_TIMEOUT).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        hide_short_help = true
    )]
    pub otel_exporter_otlp_traces_timeout: Option<u64>,

    /// Timeout of one metrics export, in milliseconds (overrides OTEL_EXPORTER_OTLP_TIMEOUT).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        hide_short_help = true
    )]
    pub otel_exporter_otlp_metrics_timeout: Option<u64>,

    /// OTLP metrics protocol: http/protobuf (the official add-on's) or grpc
    /// [default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf].
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        hide_short_help = true
    )]
    pub otel_exporter_otlp_metrics_protocol: Option<String>,

    /// OTLP protocol of every signal without its own setting: http/protobuf or grpc.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", hide_short_help = true)]
    pub otel_exporter_otlp_protocol: Option<String>,

    /// Sampler: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off, parentbased_traceidratio [default: parentbased_always_on].
    #[arg(long, env = "OTEL_TRACES_SAMPLER", hide_short_help = true)]
    pub otel_traces_sampler: Option<String>,

    /// Sampler argument: the ratio (0..=1) of the traceidratio samplers [default: 1].
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", hide_short_help = true)]
    pub otel_traces_sampler_arg: Option<String>,

    /// service.name of the exported telemetry [default: the binary's].
    #[arg(long, env = "OTEL_SERVICE_NAME", hide_short_help = true)]
    pub otel_service_name: Option<String>,

    /// More resource attributes, `key=value,key2=value2`.
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", hide_short_help = true)]
    pub otel_resource_attributes: Option<String>,

    /// OTLP metrics export interval, in milliseconds [default: 60000].
    #[arg(long, env = "OTEL_METRIC_EXPORT_INTERVAL", hide_short_help = true)]
    pub otel_metric_export_interval: Option<u64>,
}

/// How telemetry leaves the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One line per span on stdout (traces only).
    Console,
    /// OTLP over HTTP, protobuf bodies.
    HttpProtobuf,
    /// OTLP over gRPC.
    Grpc,
}

impl Protocol {
    /// `console`, `http/protobuf` or `grpc`, case-insensitive.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "console" => Some(Self::Console),
            "http/protobuf" => Some(Self::HttpProtobuf),
            "grpc" => Some(Self::Grpc),
            _ => None,
        }
    }
}

/// `OTEL_TRACES_SAMPLER` with its argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSetting {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// This ratio of trace ids.
    Ratio(f64),
    /// The parent's decision; roots by the inner setting.
    ParentBased(ParentRoot),
}

/// How a parent-based sampler decides for a root span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentRoot {
    /// Sample every root.
    AlwaysOn,
    /// Sample no root.
    AlwaysOff,
    /// Sample this ratio of roots.
    Ratio(f64),
}

/// Everything the trace and metrics pipelines need, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelSettings {
    /// Export traces.
    pub traces_enabled: bool,
    /// Where traces go.
    pub traces_protocol: Protocol,
    /// The traces address (full URL for http/protobuf).
    pub traces_endpoint: String,
    /// Headers of trace exports.
    pub traces_headers: Vec<(String, String)>,
    /// Timeout of one trace export.
    pub traces_timeout: Duration,
    /// The sampler.
    pub sampler: SamplerSetting,
    /// Push metrics over OTLP.
    pub metrics_enabled: bool,
    /// How metrics go (http/protobuf or grpc).
    pub metrics_protocol: Protocol,
    /// The metrics address (full URL for http/protobuf).
    pub metrics_endpoint: String,
    /// Headers of metric exports.
    pub metrics_headers: Vec<(String, String)>,
    /// Timeout of one metrics export.
    pub metrics_timeout: Duration,
    /// How often metrics are pushed.
    pub metric_export_interval: Duration,
    /// `service.name`.
    pub service_name: String,
    /// More resource attributes.
    pub resource_attributes: Vec<(String, String)>,
}

/// Default timeout of one export.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default metrics push interval.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

impl OtelArgs {
    /// The settings for a binary whose own flags say whether traces (over `traces_protocol`,
    /// as `console`/`http/protobuf`/`grpc`) and metrics are exported; `default_service` is the
    /// `service.name` unless `OTEL_SERVICE_NAME` is set.
    pub fn settings(
        &self,
        traces_enabled: bool,
        traces_protocol: &str,
        metrics_enabled: bool,
        default_service: &str,
    ) -> Result<OtelSettings, OtelError> {
        let traces_protocol = Protocol::parse(traces_protocol).ok_or_else(|| {
            OtelError::Invalid(format!(
                "invalid OTEL_EXPORTER_OTLP_TRACES_PROTOCOL {traces_protocol:?} (use console, http/protobuf or grpc)"
            ))
        })?;
        let metrics_protocol = match self
            .otel_exporter_otlp_metrics_protocol
            .as_deref()
            .map(|p| ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", p))
            .or_else(|| {
                self.otel_exporter_otlp_protocol
                    .as_deref()
                    .map(|p| ("OTEL_EXPORTER_OTLP_PROTOCOL", p))
            }) {
            None => Protocol::HttpProtobuf,
            Some((var, value)) => match Protocol::parse(value) {
                Some(p @ (Protocol::HttpProtobuf | Protocol::Grpc)) => p,
                _ => {
                    return Err(OtelError::Invalid(format!(
                        "invalid {var} {value:?} (use http/protobuf or grpc)"
                    )));
                }
            },
        };
        let base = self.otel_exporter_otlp_endpoint.as_deref();
        let headers = parse_pairs(
            "OTEL_EXPORTER_OTLP_HEADERS",
            self.otel_exporter_otlp_headers.as_deref(),
        )?;
        let timeout = self
            .otel_exporter_otlp_timeout
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        Ok(OtelSettings {
            traces_enabled,
            traces_protocol,
            traces_endpoint: endpoint(
                self.otel_exporter_otlp_traces_endpoint.as_deref(),
                base,
                traces_protocol,
                "/v1/traces",
            ),
            traces_headers: merged(
                &headers,
                parse_pairs(
                    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                    self.otel_exporter_otlp_traces_headers.as_deref(),
                )?,
            ),
            traces_timeout: self
                .otel_exporter_otlp_traces_timeout
                .map_or(timeout, Duration::from_millis),
            sampler: sampler(
                self.otel_traces_sampler.as_deref(),
                self.otel_traces_sampler_arg.as_deref(),
            )?,
            metrics_enabled,
            metrics_protocol,
            metrics_endpoint: endpoint(
                self.otel_exporter_otlp_metrics_endpoint.as_deref(),
                base,
                metrics_protocol,
                "/v1/metrics",
            ),
            metrics_headers: merged(
                &headers,
                parse_pairs(
                    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
                    self.otel_exporter_otlp_metrics_headers.as_deref(),
                )?,
            ),
            metrics_timeout: self
                .otel_exporter_otlp_metrics_timeout
                .map_or(timeout, Duration::from_millis),
            metric_export_interval: match self.otel_metric_export_interval {
                Some(0) => {
                    return Err(OtelError::Invalid(
                        "invalid OTEL_METRIC_EXPORT_INTERVAL 0 (use a positive number of milliseconds)"
                            .into(),
                    ));
                }
                Some(ms) => Duration::from_millis(ms),
                None => DEFAULT_INTERVAL,
            },
            service_name: self
                .otel_service_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| default_service.to_owned()),
            resource_attributes: parse_pairs(
                "OTEL_RESOURCE_ATTRIBUTES",
                self.otel_resource_attributes.as_deref(),
            )?,
        })
    }
}

/// The address of one signal: its own variable as is, else the base (with the signal's path
/// for http/protobuf), else the default collector address.
fn endpoint(own: Option<&str>, base: Option<&str>, protocol: Protocol, path: &str) -> String {
    if let Some(own) = own.filter(|s| !s.is_empty()) {
        return own.to_owned();
    }
    let grpc = protocol == Protocol::Grpc;
    let base = base.filter(|s| !s.is_empty()).unwrap_or(if grpc {
        DEFAULT_GRPC_ENDPOINT
    } else {
        DEFAULT_HTTP_ENDPOINT
    });
    if grpc {
        base.to_owned()
    } else {
        format!("{}{path}", base.trim_end_matches('/'))
    }
}

/// `general` with `specific` added, a key in `specific` replacing the same key in `general`.
fn merged(general: &[(String, String)], specific: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<_> = general
        .iter()
        .filter(|(k, _)| !specific.iter().any(|(s, _)| s == k))
        .cloned()
        .collect();
    out.extend(specific);
    out
}

/// `key=value,key2=value2` (W3C baggage style; values may be percent-encoded).
fn parse_pairs(var: &str, value: Option<&str>) -> Result<Vec<(String, String)>, OtelError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (k, v) = item.split_once('=').ok_or_else(|| {
                OtelError::Invalid(format!("invalid {var}: {item:?} is not key=value"))
            })?;
            let k = k.trim();
            if k.is_empty() {
                return Err(OtelError::Invalid(format!(
                    "invalid {var}: empty key in {item:?}"
                )));
            }
            Ok((k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
fn sampler(name: Option<&str>, arg: Option<&str>) -> Result<SamplerSetting, OtelError> {
    let ratio = || -> Result<f64, OtelError> {
        let Some(arg) = arg.filter(|a| !a.is_empty()) else {
            return Ok(1.0);
        };
        match arg.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(OtelError::Invalid(format!(
                "invalid OTEL_TRACES_SAMPLER_ARG {arg:?} (use a ratio from 0 to 1)"
            ))),
        }
    };
    Ok(
        match name.map(str::trim).unwrap_or("parentbased_always_on") {
            "" | "parentbased_always_on" => SamplerSetting::ParentBased(ParentRoot::AlwaysOn),
            "always_on" => SamplerSetting::AlwaysOn,
            "always_off" => SamplerSetting::AlwaysOff,
            "traceidratio" => SamplerSetting::Ratio(ratio()?),
            "parentbased_always_off" => SamplerSetting::ParentBased(ParentRoot::AlwaysOff),
            "parentbased_traceidratio" => SamplerSetting::ParentBased(ParentRoot::Ratio(ratio()?)),
            other => {
                return Err(OtelError::Invalid(format!(
                    "invalid OTEL_TRACES_SAMPLER {other:?} (use always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off or parentbased_traceidratio)"
                )));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> OtelArgs {
        OtelArgs::default()
    }

    #[test]
    fn defaults_follow_the_sdk() {
        let s = args().settings(true, "GRPC", false, "svc").unwrap();
        assert_eq!(s.traces_protocol, Protocol::Grpc);
        assert_eq!(s.traces_endpoint, "http://localhost:4317");
        assert_eq!(s.metrics_protocol, Protocol::HttpProtobuf);
        assert_eq!(s.metrics_endpoint, "http://localhost:4318/v1/metrics");
        assert_eq!(s.sampler, SamplerSetting::ParentBased(ParentRoot::AlwaysOn));
        assert_eq!(s.service_name, "svc");
        assert_eq!(s.metric_export_interval, Duration::from_secs(60));
        assert_eq!(s.traces_timeout, Duration::from_secs(10));
    }

    #[test]
    fn endpoints_headers_and_sampler_are_read() {
        let a = OtelArgs {
            otel_exporter_otlp_endpoint: Some("http://collector:4318/".into()),
            otel_exporter_otlp_metrics_endpoint: Some("http://m:9/custom".into()),
            otel_exporter_otlp_headers: Some("a=1, b=x%20y".into()),
            otel_exporter_otlp_traces_headers: Some("b=2".into()),
            otel_exporter_otlp_traces_timeout: Some(250),
            otel_traces_sampler: Some("parentbased_traceidratio".into()),
            otel_traces_sampler_arg: Some("0.1".into()),
            otel_service_name: Some("mine".into()),
            otel_resource_attributes: Some("k8s.pod.name=p1".into()),
            otel_metric_export_interval: Some(5000),
            ..args()
        };
        let s = a.settings(true, "http/protobuf", true, "svc").unwrap();
        assert_eq!(s.traces_endpoint, "http://collector:4318/v1/traces");
        assert_eq!(s.metrics_endpoint, "http://m:9/custom");
        assert_eq!(
            s.traces_headers,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            s.metrics_headers,
            vec![("a".into(), "1".into()), ("b".into(), "x y".into())]
        );
        assert_eq!(s.traces_timeout, Duration::from_millis(250));
        assert_eq!(
            s.sampler,
            SamplerSetting::ParentBased(ParentRoot::Ratio(0.1))
        );
        assert_eq!(s.service_name, "mine");
        assert_eq!(
            s.resource_attributes,
            vec![("k8s.pod.name".into(), "p1".into())]
        );
        assert_eq!(s.metric_export_interval, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_their_variable() {
        let bad = |a: OtelArgs, proto: &str, var: &str| {
            let e = a.settings(true, proto, true, "s").unwrap_err().to_string();
            assert!(e.contains(var), "{e}");
        };
        bad(args(), "udp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
        bad(
            OtelArgs {
                otel_traces_sampler: Some("sometimes".into()),
                ..args()
            },
            "grpc",
            "OTEL_TRACES_SAMPLER",
        );
        bad(
            OtelArgs {
                otel_traces_sampler: Some("traceidratio".into()),
                otel_traces_sampler_arg: Some("2".into()),
                ..args()
            },
            "grpc",
            "OTEL_TRACES_SAMPLER_ARG",
        );
        bad(
            OtelArgs {
                otel_exporter_otlp_headers: Some("novalue".into()),
                ..args()
            },
            "grpc",
            "OTEL_EXPORTER_OTLP_HEADERS",
        );
        bad(
            OtelArgs {
                otel_exporter_otlp_metrics_protocol: Some("console".into()),
                ..args()
            },
            "grpc",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        );
    }
}
