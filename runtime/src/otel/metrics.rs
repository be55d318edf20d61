//! OTLP metrics push. The Prometheus registry stays the one source of truth: at each export
//! interval it is encoded as it is for `/metrics`, and the text is converted to OTLP metric
//! data under the same names as the `/metrics` samples (`interceptor_request_count_total`,
//! `interceptor_request_duration_seconds`, ...): counters become cumulative monotonic sums,
//! gauges gauges, histograms explicit-bucket histograms. Pushed over OTLP/HTTP (protobuf) or
//! OTLP/gRPC; a failed push is logged at debug and retried at the next interval.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus_client::registry::Registry;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use super::OtelError;
use super::args::{OtelSettings, Protocol};
use super::http::ExportClient;

/// Pushes a registry's metrics over OTLP at the export interval.
pub struct MetricsPush {
    registry: Arc<Registry>,
    scope: &'static str,
    resource: Resource,
    start_ns: u64,
    interval: Duration,
    sink: Sink,
}

impl std::fmt::Debug for MetricsPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsPush")
            .field("scope", &self.scope)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// Where pushes go.
#[expect(
    clippy::large_enum_variant,
    reason = "one per process, never moved after start"
)]
enum Sink {
    Http {
        client: ExportClient,
        endpoint: http::Uri,
        headers: http::HeaderMap,
    },
    Grpc {
        client: MetricsServiceClient<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
        timeout: Duration,
    },
}

impl MetricsPush {
    /// A push of `registry` as the meter `scope`, as `settings` say. Must run inside a tokio
    /// runtime.
    pub fn new(
        settings: &OtelSettings,
        scope: &'static str,
        registry: Arc<Registry>,
    ) -> Result<Self, OtelError> {
        let invalid = |what: &dyn std::fmt::Display| {
            OtelError::Invalid(format!("invalid OTLP metrics setting: {what}"))
        };
        let sink = match settings.metrics_protocol {
            Protocol::Grpc => {
                let endpoint =
                    tonic::transport::Endpoint::from_shared(settings.metrics_endpoint.clone())
                        .map_err(|e| invalid(&e))?
                        .timeout(settings.metrics_timeout);
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &settings.metrics_headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                        .map_err(|e| invalid(&e))?;
                    metadata.insert(key, v.parse().map_err(|e| invalid(&e))?);
                }
                Sink::Grpc {
                    client: MetricsServiceClient::new(endpoint.connect_lazy()),
                    metadata,
                    timeout: settings.metrics_timeout,
                }
            }
            Protocol::HttpProtobuf | Protocol::Console => {
                let mut headers = http::HeaderMap::new();
                for (k, v) in &settings.metrics_headers {
                    let name =
                        http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| invalid(&e))?;
                    headers.insert(name, v.parse().map_err(|e| invalid(&e))?);
                }
                Sink::Http {
                    client: ExportClient::new(settings.metrics_timeout)
                        .ok_or_else(|| OtelError::Exporter("no tokio runtime".into()))?,
                    endpoint: settings.metrics_endpoint.parse().map_err(|e| invalid(&e))?,
                    headers,
                }
            }
        };
        let resource = Resource {
            attributes: std::iter::once(("service.name", settings.service_name.as_str()))
                .chain(std::iter::once((
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                )))
                .chain(
                    settings
                        .resource_attributes
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .map(|(k, v)| string_kv(k, v))
                .collect(),
            ..Resource::default()
        };
        Ok(Self {
            registry,
            scope,
            resource,
            start_ns: now_ns(),
            interval: settings.metric_export_interval,
            sink,
        })
    }

    /// Pushes at every interval until `stop`, then once more.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => {
                    self.push_once().await;
                    return;
                }
            }
            self.push_once().await;
        }
    }

    /// Encodes the registry and pushes it once; failures are logged.
    pub async fn push_once(&mut self) {
        if let Err(error) = self.push().await {
            tracing::debug!(%error, "OTLP metrics push failed");
        }
    }

    async fn push(&mut self) -> Result<(), String> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| e.to_string())?;
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: self.scope.to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    metrics: convert(&text, self.start_ns, now_ns()),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        match &mut self.sink {
            Sink::Http {
                client,
                endpoint,
                headers,
            } => {
                let mut req = http::Request::new(Bytes::from(request.encode_to_vec()));
                *req.method_mut() = http::Method::POST;
                *req.uri_mut() = endpoint.clone();
                *req.headers_mut() = headers.clone();
                req.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                let response = client.send(req).await.map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("collector answered {}", response.status()));
                }
                Ok(())
            }
            Sink::Grpc {
                client,
                metadata,
                timeout,
            } => {
                let mut req = tonic::Request::new(request);
                *req.metadata_mut() = metadata.clone();
                req.set_timeout(*timeout);
                client
                    .export(req)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// One sample line of the text format.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses `name{a="x",b="y"} value [timestamp]`; `None` for anything else.
fn sample(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '}' {
                end = Some(i);
                break;
            }
            if c == ',' || c == ' ' {
                continue;
            }
            let key_start = i;
            let mut key_end = i;
            for (j, c) in chars.by_ref() {
                if c == '=' {
                    key_end = j;
                    break;
                }
            }
            let key = after[key_start..key_end].to_owned();
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()? {
                    (_, '"') => break,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            }
            labels.push((key, value));
        }
        rest = &after[end? + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| string_kv(k, v)).collect()
}

fn number(labels: &[(String, String)], value: f64, start: u64, now: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..NumberDataPoint::default()
    }
}

/// The metric families of a text exposition as OTLP metrics.
pub fn convert(text: &str, start: u64, now: u64) -> Vec<Metric> {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut family: Option<(String, String, String)> = None; // name, type, help
    let mut help: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name.to_owned(), text.to_owned()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let description = help
                .take()
                .filter(|(n, _)| n == name)
                .map(|(_, h)| h)
                .unwrap_or_default();
            family = Some((name.to_owned(), kind.to_owned(), description));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (Some((fname, kind, description)), Some(s)) = (&family, sample(line)) else {
            continue;
        };
        let Some(suffix) = s.name.strip_prefix(fname.as_str()) else {
            continue;
        };
        match (kind.as_str(), suffix) {
            ("counter", "_total") => {
                let point = number(&s.labels, s.value, start, now);
                match metrics.last_mut() {
                    Some(Metric {
                        name,
                        data: Some(metric::Data::Sum(sum)),
                        ..
                    }) if name == s.name => sum.data_points.push(point),
                    _ => metrics.push(Metric {
                        name: s.name.to_owned(),
                        description: description.clone(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![point],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Metric::default()
                    }),
                }
            }
            ("gauge", "") => {
                let point = number(&s.labels, s.value, start, now);
                match metrics.last_mut() {
                    Some(Metric {
                        name,
                        data: Some(metric::Data::Gauge(gauge)),
                        ..
                    }) if name == s.name => gauge.data_points.push(point),
                    _ => metrics.push(Metric {
                        name: s.name.to_owned(),
                        description: description.clone(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![point],
                        })),
                        ..Metric::default()
                    }),
                }
            }
            ("histogram", "_sum" | "_count" | "_bucket") => {
                let mut labels = s.labels;
                let le = labels
                    .iter()
                    .position(|(k, _)| k == "le")
                    .map(|i| labels.remove(i).1);
                let attrs = attributes(&labels);
                if !matches!(metrics.last(), Some(m) if m.name == *fname) {
                    metrics.push(Metric {
                        name: fname.clone(),
                        description: description.clone(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: Vec::new(),
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Metric::default()
                    });
                }
                let Some(Metric {
                    data: Some(metric::Data::Histogram(histogram)),
                    ..
                }) = metrics.last_mut()
                else {
                    continue;
                };
                let point = match histogram
                    .data_points
                    .iter_mut()
                    .position(|p| p.attributes == attrs)
                {
                    Some(i) => &mut histogram.data_points[i],
                    None => {
                        histogram.data_points.push(HistogramDataPoint {
                            attributes: attrs,
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            ..HistogramDataPoint::default()
                        });
                        let last = histogram.data_points.len() - 1;
                        &mut histogram.data_points[last]
                    }
                };
                match suffix {
                    "_sum" => point.sum = Some(s.value),
                    "_count" => point.count = s.value as u64,
                    _ => {
                        // Cumulative bucket counts become per-bucket counts.
                        let cumulative = s.value as u64;
                        let before: u64 = point.bucket_counts.iter().sum();
                        point.bucket_counts.push(cumulative.saturating_sub(before));
                        if let Some(bound) = le.and_then(|le| le.parse::<f64>().ok())
                            && bound.is_finite()
                        {
                            point.explicit_bounds.push(bound);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    metrics
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge as PromGauge;
    use prometheus_client::metrics::histogram::Histogram as PromHistogram;

    use super::*;

    #[test]
    fn registry_text_becomes_otlp_under_the_same_names() {
        let mut registry = Registry::default();
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("demo_request_count", "Requests", requests.clone());
        let gauge = PromGauge::<i64>::default();
        registry.register("demo_concurrency", "In flight", gauge.clone());
        let histogram = PromHistogram::new([0.1, 1.0]);
        registry.register("demo_duration_seconds", "Latency", histogram.clone());
        requests
            .get_or_create(&vec![("code".into(), "200".into())])
            .inc_by(3);
        requests
            .get_or_create(&vec![("code".into(), "a\"b".into())])
            .inc();
        gauge.set(4);
        histogram.observe(0.05);
        histogram.observe(0.5);
        histogram.observe(5.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();

        let metrics = convert(&text, 1, 2);
        let names: Vec<_> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "demo_request_count_total",
                "demo_concurrency",
                "demo_duration_seconds"
            ]
        );
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
            panic!("not a sum: {:?}", metrics[0]);
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points.len(), 2);
        let values: Vec<_> = sum
            .data_points
            .iter()
            .map(|p| (p.attributes[0].clone(), p.value))
            .collect();
        assert!(values.contains(&(
            string_kv("code", "a\"b"),
            Some(number_data_point::Value::AsDouble(1.0))
        )));
        let Some(metric::Data::Histogram(h)) = &metrics[2].data else {
            panic!("not a histogram");
        };
        let p = &h.data_points[0];
        assert_eq!(p.count, 3);
        assert_eq!(p.sum, Some(5.55));
        assert_eq!(p.explicit_bounds, [0.1, 1.0]);
        assert_eq!(p.bucket_counts, [1, 1, 1]);
    }
}
