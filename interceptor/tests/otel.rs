//! OpenTelemetry: request traces and OTLP metrics, received by an in-process OTLP collector
//! (gRPC via the generated `opentelemetry-proto` services, HTTP/protobuf via hyper).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the collector received.
enum Received {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

struct GrpcTraces(mpsc::UnboundedSender<Received>);

#[tonic::async_trait]
impl TraceService for GrpcTraces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(Received::Traces(request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC trace collector on 127.0.0.1.
async fn grpc_collector() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(GrpcTraces(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, rx)
}

/// An OTLP/HTTP (protobuf) collector on 127.0.0.1: `/v1/traces` and `/v1/metrics`.
async fn http_collector() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let status = match (path.as_str(), body) {
                            ("/v1/traces", Ok(body)) => {
                                let decoded = ExportTraceServiceRequest::decode(body);
                                decoded.map(|r| tx.send(Received::Traces(r))).is_ok()
                            }
                            ("/v1/metrics", Ok(body)) => {
                                let decoded = ExportMetricsServiceRequest::decode(body);
                                decoded.map(|r| tx.send(Received::Metrics(r))).is_ok()
                            }
                            _ => false,
                        };
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = if status {
                            http::StatusCode::OK
                        } else {
                            http::StatusCode::BAD_REQUEST
                        };
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn str_attr(span: &Span, key: &str) -> Option<String> {
    match attr(&span.attributes, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(&span.attributes, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// Spans received until `done` holds for the spans of trace `trace_id` (hex).
async fn spans_of(
    rx: &mut mpsc::UnboundedReceiver<Received>,
    trace_id: &str,
    all: &mut Vec<Span>,
    done: impl Fn(&[&Span]) -> bool,
) -> Vec<Span> {
    loop {
        let of_trace: Vec<&Span> = all
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .collect();
        if done(&of_trace) {
            return of_trace.into_iter().cloned().collect();
        }
        match rx.recv().await.expect("collector alive") {
            Received::Traces(request) => all.extend(
                request
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans),
            ),
            Received::Metrics(_) => {}
        }
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A backend answering 200 and remembering the `traceparent` it received.
async fn recording_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let addr = backend(move |req: Request<hyper::body::Incoming>| {
        let record = Arc::clone(&record);
        async move {
            if let Some(tp) = req.headers().get("traceparent") {
                record
                    .lock()
                    .expect("lock")
                    .push(tp.to_str().unwrap_or("").to_owned());
            }
            Response::new(full("ok"))
        }
    })
    .await;
    (addr, seen)
}

#[tokio::test]
async fn cold_start_trace_over_grpc_is_parented_on_the_client_and_reaches_the_backend() {
    bounded(async {
        let (collector, mut rx) = grpc_collector().await;
        let h = Harness::start(|c| {
            c.otel_exporter_otlp_traces_enabled = true;
            c.otel_exporter_otlp_traces_protocol = "grpc".into();
            c.otel.otel_exporter_otlp_endpoint = Some(format!("http://{collector}"));
        })
        .await;
        let (backend_addr, seen) = recording_backend().await;
        h.install(vec![route("ns", "cold", &["cold"], &[])]).await;

        // No ready endpoint: the request is held until the endpoint appears.
        let url = h.proxy_url("/hello");
        let request = tokio::spawn(async move {
            let req = Request::get(url)
                .header(http::header::HOST, "cold")
                .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
                .body(empty())
                .expect("request");
            client().request(req).await.expect("response").status()
        });
        h.wait_concurrency("ns/cold", 1).await;
        h.set_endpoints("ns", "cold", 80, http1(&[backend_addr]));
        assert_eq!(request.await.expect("joined"), http::StatusCode::OK);

        let mut all = Vec::new();
        let spans = spans_of(&mut rx, TRACE_ID, &mut all, |s| s.len() >= 3).await;
        let by_name = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no {name} span in {spans:?}"))
        };
        let server = by_name("GET keda-http-interceptor");
        let cold = by_name("cold-start wait");
        let attempt = by_name("upstream attempt");
        assert_eq!(spans.len(), 3, "one trace, three spans: {spans:?}");
        assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
        assert_eq!(cold.parent_span_id, server.span_id);
        assert_eq!(attempt.parent_span_id, server.span_id);
        assert_eq!(
            str_attr(server, "http.request.method").as_deref(),
            Some("GET")
        );
        assert_eq!(str_attr(server, "http.route").as_deref(), Some("ns/cold"));
        assert_eq!(int_attr(server, "http.response.status_code"), Some(200));
        assert_eq!(
            str_attr(server, "client.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            str_attr(cold, "keda_http.cold_start.outcome").as_deref(),
            Some("woke")
        );
        assert!(int_attr(cold, "keda_http.cold_start.held_ms").is_some());
        assert_eq!(int_attr(attempt, "keda_http.upstream.attempt"), Some(0));
        assert_eq!(
            int_attr(attempt, "server.port"),
            Some(i64::from(backend_addr.port()))
        );
        assert_eq!(int_attr(attempt, "http.response.status_code"), Some(200));

        // The backend's traceparent continues the same trace, under the attempt span.
        let received = seen.lock().expect("lock").clone();
        assert_eq!(
            received,
            vec![format!("00-{TRACE_ID}-{}-01", hex(&attempt.span_id))]
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn http_protobuf_export_honours_a_parent_based_sampler() {
    bounded(async {
        let (collector, mut rx) = http_collector().await;
        let h = Harness::start(|c| {
            c.otel_exporter_otlp_traces_enabled = true;
            c.otel_exporter_otlp_traces_protocol = "http/protobuf".into();
            c.otel.otel_exporter_otlp_endpoint = Some(format!("http://{collector}"));
            c.otel.otel_traces_sampler = Some("parentbased_always_off".into());
        })
        .await;
        let (backend_addr, seen) = recording_backend().await;
        h.install(vec![route("ns", "app", &["app"], &[])]).await;
        h.set_endpoints("ns", "app", 80, http1(&[backend_addr]));

        // A root request: not sampled, so not exported; the backend sees an unsampled parent.
        let (status, _, _) = get(&h.proxy_url("/"), "app").await;
        assert_eq!(status, http::StatusCode::OK);
        // A request whose client sampled it: exported.
        let req = Request::get(h.proxy_url("/"))
            .header(http::header::HOST, "app")
            .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
            .body(empty())
            .expect("request");
        assert_eq!(
            client().request(req).await.expect("response").status(),
            http::StatusCode::OK
        );

        let mut all = Vec::new();
        let spans = spans_of(&mut rx, TRACE_ID, &mut all, |s| s.len() >= 2).await;
        assert!(spans.iter().any(|s| s.name == "upstream attempt"));
        assert!(
            all.iter().all(|s| hex(&s.trace_id) == TRACE_ID),
            "only the sampled trace is exported: {all:?}"
        );
        let received = seen.lock().expect("lock").clone();
        assert_eq!(received.len(), 2);
        assert!(
            received[0].ends_with("-00"),
            "root not sampled: {received:?}"
        );
        assert!(received[1].starts_with(&format!("00-{TRACE_ID}-")));
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_down_collector_drops_counted_spans_and_requests_still_succeed() {
    bounded(async {
        let down = refused_addr().await;
        let h = Harness::start(|c| {
            c.otel_exporter_otlp_traces_enabled = true;
            c.otel_exporter_otlp_traces_protocol = "grpc".into();
            c.otel.otel_exporter_otlp_endpoint = Some(format!("http://{down}"));
            c.otel.otel_exporter_otlp_traces_timeout = Some(500);
        })
        .await;
        let (backend_addr, _) = recording_backend().await;
        h.install(vec![route("ns", "app", &["app"], &[])]).await;
        h.set_endpoints("ns", "app", 80, http1(&[backend_addr]));
        for _ in 0..5 {
            let (status, _, _) = get(&h.proxy_url("/"), "app").await;
            assert_eq!(status, http::StatusCode::OK);
        }
        let metrics = h.addrs.metrics.expect("metrics listener");
        loop {
            let (_, _, body) = get(&format!("http://{metrics}/metrics"), "m").await;
            let text = String::from_utf8_lossy(&body).into_owned();
            let dropped = text
                .lines()
                .find_map(|l| l.strip_prefix("interceptor_otel_dropped_spans_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .expect("dropped-span counter exposed");
            if dropped >= 10.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn otlp_metrics_arrive_with_the_prometheus_names() {
    bounded(async {
        let (collector, mut rx) = http_collector().await;
        let h = Harness::start(|c| {
            c.otel_exporter_otlp_metrics_enabled = true;
            c.otel.otel_exporter_otlp_endpoint = Some(format!("http://{collector}"));
            c.otel.otel_metric_export_interval = Some(100);
        })
        .await;
        let (backend_addr, _) = recording_backend().await;
        h.install(vec![route("ns", "app", &["app"], &[])]).await;
        h.set_endpoints("ns", "app", 80, http1(&[backend_addr]));
        let (status, _, _) = get(&h.proxy_url("/"), "app").await;
        assert_eq!(status, http::StatusCode::OK);

        loop {
            let Received::Metrics(request) = rx.recv().await.expect("collector alive") else {
                continue;
            };
            let metrics: Vec<_> = request
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .collect();
            let count = metrics
                .iter()
                .find(|m| m.name == "interceptor_request_count_total");
            let Some(metric::Data::Sum(sum)) = count.and_then(|m| m.data.as_ref()) else {
                continue;
            };
            let has_route = |attributes: &[KeyValue]| {
                matches!(attr(attributes, "route_name"),
                         Some(any_value::Value::StringValue(s)) if s == "app")
            };
            if !sum.data_points.iter().any(|p| has_route(&p.attributes)) {
                continue;
            }
            assert!(sum.is_monotonic);
            let duration = metrics
                .iter()
                .find(|m| m.name == "interceptor_request_duration_seconds")
                .expect("duration histogram");
            assert!(matches!(duration.data, Some(metric::Data::Histogram(_))));
            assert!(
                metrics
                    .iter()
                    .any(|m| m.name == "interceptor_request_concurrency")
            );
            break;
        }
        h.stop().await;
    })
    .await;
}
