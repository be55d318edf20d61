//! Every RPC in every metadata mode against a scaler fed by fake interceptors: metric names,
//! targets and values as in compat §5.3, errors for missing objects, reflection and health.

mod common;

use std::time::Duration;

use common::{FakeInterceptor, TestScaler, bounded, by_name, metrics_req, settings, so_ref};
use keda_http_scaler::rate::RateConfig;
use keda_http_scaler::targets::{RateTarget, RouteScaling, ScaledObjectScaling};
use tonic::Code;

const TICK: Duration = Duration::from_millis(100);

/// Two interceptors, polled (no push), with counts on three routes.
async fn setup() -> (FakeInterceptor, FakeInterceptor, TestScaler) {
    let a = FakeInterceptor::start().await;
    let b = FakeInterceptor::start().await;
    a.set("ns/web", 3, 0);
    a.set("ns/api", 2, 0);
    a.set("keda/other", 1, 0);
    b.set("ns/web", 1, 0);
    let scaler = TestScaler::start(settings(TICK, TICK, false), &[&a, &b]).await;
    scaler
        .wait_for(|agg| agg.concurrency("ns/web") == 4 && agg.concurrency("keda/other") == 1)
        .await;
    (a, b, scaler)
}

#[tokio::test]
async fn interceptor_route_mode() {
    bounded(async {
        let (a, _b, scaler) = setup().await;
        scaler.targets.set_route(
            "ns",
            "web",
            RouteScaling {
                concurrency: Some(10.0),
                rate: Some(RateTarget {
                    target: 5.0,
                    config: RateConfig::new(
                        Some(Duration::from_secs(10)),
                        Some(Duration::from_millis(100)),
                    ),
                }),
            },
        );
        let sor = so_ref(
            "ns",
            "web-so",
            &[("interceptorRoute", "web"), ("scalerAddress", "x:9090")],
        );
        let mut client = scaler.client.clone();

        let specs = client
            .get_metric_spec(sor.clone())
            .await
            .expect("GetMetricSpec")
            .into_inner()
            .metric_specs;
        let specs: Vec<_> = specs
            .iter()
            .map(|s| (s.metric_name.as_str(), s.target_size, s.target_size_float))
            .collect();
        assert_eq!(
            specs,
            [("http_web_concurrency", 0, 10.0), ("http_web_rate", 0, 5.0)]
        );

        let values = client
            .get_metrics(metrics_req(&sor, ""))
            .await
            .expect("GetMetrics")
            .into_inner()
            .metric_values;
        let values = by_name(&values);
        assert_eq!(values["http_web_concurrency"], (0, 4.0));
        assert_eq!(values["http_web_rate"], (0, 0.0), "no requests yet");

        // Requests arrive: the rate becomes positive.
        a.set("ns/web", 3, 40);
        scaler
            .wait_for(|agg| agg.requests_seen("ns/web") == 40)
            .await;
        let values = client
            .get_metrics(metrics_req(&sor, "http_web_rate"))
            .await
            .expect("GetMetrics")
            .into_inner()
            .metric_values;
        assert_eq!(values.len(), 1, "filtered by metric name");
        assert_eq!(values[0].metric_name, "http_web_rate");
        assert!(values[0].metric_value_float > 0.0, "{values:?}");

        let values = client
            .get_metrics(metrics_req(&sor, "http_other_concurrency"))
            .await
            .expect("GetMetrics")
            .into_inner()
            .metric_values;
        assert!(
            values.is_empty(),
            "an unknown metric name gives an empty list"
        );

        assert!(
            client
                .is_active(sor.clone())
                .await
                .expect("IsActive")
                .into_inner()
                .result
        );

        // A missing route is an error that names it.
        let missing = so_ref("ns", "so", &[("interceptorRoute", "missing")]);
        for status in [
            client
                .get_metric_spec(missing.clone())
                .await
                .expect_err("missing"),
            client
                .get_metrics(metrics_req(&missing, ""))
                .await
                .expect_err("missing"),
            client
                .is_active(missing.clone())
                .await
                .expect_err("missing"),
        ] {
            assert_eq!(status.code(), Code::NotFound);
            assert!(
                status.message().contains("InterceptorRoute ns/missing"),
                "{status:?}"
            );
        }
        // The route must live in the ScaledObject's namespace.
        let elsewhere = so_ref("other-ns", "so", &[("interceptorRoute", "web")]);
        assert_eq!(
            client
                .get_metric_spec(elsewhere)
                .await
                .expect_err("other ns")
                .code(),
            Code::NotFound
        );
        scaler.stop().await;
    })
    .await;
}

#[tokio::test]
async fn http_scaled_object_mode() {
    bounded(async {
        let (a, _b, scaler) = setup().await;
        let mut client = scaler.client.clone();
        scaler.targets.set_scaled_object(
            "ns",
            "api",
            ScaledObjectScaling {
                target_pending_requests: Some(50),
                ..ScaledObjectScaling::default()
            },
        );
        let sor = so_ref("ns", "api", &[("httpScaledObject", "api")]);
        let specs = client
            .get_metric_spec(sor.clone())
            .await
            .expect("GetMetricSpec")
            .into_inner()
            .metric_specs;
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].metric_name, "http-ns_002Fapi");
        assert_eq!(
            (specs[0].target_size, specs[0].target_size_float),
            (50, 0.0)
        );
        let values = client
            .get_metrics(metrics_req(&sor, "http-ns_002Fapi"))
            .await
            .expect("GetMetrics")
            .into_inner()
            .metric_values;
        assert_eq!(by_name(&values)["http-ns_002Fapi"], (2, 0.0));

        // Rate mode: the rate target wins and the value is the ceiled rate.
        scaler.targets.set_scaled_object(
            "ns",
            "web",
            ScaledObjectScaling {
                target_pending_requests: Some(50),
                concurrency: Some(20),
                rate: Some((7, RateConfig::default())),
            },
        );
        let sor = so_ref("ns", "web", &[("httpScaledObject", "web")]);
        let specs = client
            .get_metric_spec(sor.clone())
            .await
            .expect("GetMetricSpec")
            .into_inner()
            .metric_specs;
        assert_eq!(
            (specs[0].metric_name.as_str(), specs[0].target_size),
            ("http-ns_002Fweb", 7)
        );
        let values = client
            .get_metrics(metrics_req(&sor, ""))
            .await
            .expect("GetMetrics")
            .into_inner()
            .metric_values;
        assert_eq!(
            by_name(&values)["http-ns_002Fweb"],
            (0, 0.0),
            "no requests yet"
        );
        a.set("ns/web", 3, 1);
        scaler
            .wait_for(|agg| agg.requests_seen("ns/web") == 1)
            .await;
        let values = client
            .get_metrics(metrics_req(&sor, ""))
            .await
            .expect("GetMetrics")
            .into_inner()
            .metric_values;
        // One request over at most 60 one-second buckets: a fraction, ceiled to 1.
        assert_eq!(by_name(&values)["http-ns_002Fweb"], (1, 0.0));

        // httpScaledObject takes precedence over interceptorTargetPendingRequests.
        let both = so_ref(
            "ns",
            "api",
            &[
                ("httpScaledObject", "api"),
                ("interceptorTargetPendingRequests", "200"),
            ],
        );
        let specs = client
            .get_metric_spec(both)
            .await
            .expect("spec")
            .into_inner()
            .metric_specs;
        assert_eq!(specs[0].target_size, 50);

        let missing = so_ref("ns", "gone", &[("httpScaledObject", "gone")]);
        let status = client.get_metric_spec(missing).await.expect_err("missing");
        assert_eq!(status.code(), Code::NotFound);
        assert!(
            status.message().contains("HTTPScaledObject ns/gone"),
            "{status:?}"
        );
        scaler.stop().await;
    })
    .await;
}

#[tokio::test]
async fn interceptor_self_scaling_mode() {
    bounded(async {
        let (_a, _b, scaler) = setup().await;
        let mut client = scaler.client.clone();
        let sor = so_ref(
            "keda",
            "keda-add-ons-http-interceptor",
            &[("interceptorTargetPendingRequests", "200")],
        );
        let specs = client
            .get_metric_spec(sor.clone())
            .await
            .expect("GetMetricSpec")
            .into_inner()
            .metric_specs;
        assert_eq!(specs.len(), 1);
        assert_eq!(
            specs[0].metric_name,
            "http-keda_002Fkeda-add-ons-http-interceptor"
        );
        assert_eq!(specs[0].target_size, 200);
        let values = client
            .get_metrics(metrics_req(&sor, ""))
            .await
            .expect("GetMetrics")
            .into_inner()
            .metric_values;
        // Sum over every route on every interceptor: 3 + 2 + 1 + 1.
        assert_eq!(
            by_name(&values)["http-keda_002Fkeda-add-ons-http-interceptor"],
            (7, 0.0)
        );
        assert!(
            client
                .is_active(sor)
                .await
                .expect("IsActive")
                .into_inner()
                .result
        );

        let bad = so_ref("keda", "x", &[("interceptorTargetPendingRequests", "lots")]);
        assert_eq!(
            client.get_metric_spec(bad).await.expect_err("bad").code(),
            Code::InvalidArgument
        );
        let none = so_ref("keda", "x", &[("scalerAddress", "x:9090")]);
        let status = client.get_metric_spec(none).await.expect_err("no mode");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("unable to get HTTPScaledObject reference")
        );
        scaler.stop().await;
    })
    .await;
}

#[tokio::test]
async fn stream_rpcs_health_and_reflection() {
    bounded(async {
        let (_a, _b, scaler) = setup().await;
        let mut client = scaler.client.clone();
        scaler.targets.set_route(
            "ns",
            "web",
            RouteScaling {
                concurrency: Some(10.0),
                rate: None,
            },
        );
        let sor = so_ref("ns", "web", &[("interceptorRoute", "web")]);

        // StreamMetricSpec: Unimplemented, so KEDA falls back to GetMetricSpec.
        let status = client
            .stream_metric_spec(sor.clone())
            .await
            .expect_err("unimplemented");
        assert_eq!(status.code(), Code::Unimplemented);

        // StreamIsActive: a message per interval; the route is busy.
        let mut stream = client
            .stream_is_active(sor.clone())
            .await
            .expect("stream")
            .into_inner();
        for _ in 0..3 {
            let msg = stream.message().await.expect("message").expect("open");
            assert!(msg.result);
        }
        drop(stream);
        let missing = so_ref("ns", "x", &[("interceptorRoute", "missing")]);
        let status = client.stream_is_active(missing).await.expect_err("missing");
        assert_eq!(status.code(), Code::NotFound);

        // Health: both services SERVING once an interceptor answered.
        let mut health = tonic_health::pb::health_client::HealthClient::new(scaler.channel.clone());
        for service in ["liveness", "readiness"] {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .expect("check")
                .into_inner()
                .status;
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                "{service}"
            );
        }

        // Reflection lists the services.
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(scaler.channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection")
            .into_inner();
        let response = responses.message().await.expect("response").expect("one");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection response {response:?}");
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(
            names.contains(&"externalscaler.ExternalScaler"),
            "{names:?}"
        );
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
        drop(responses);
        scaler.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sparse_traffic_counts_as_active_until_reported() {
    bounded(async {
        let (a, _b, scaler) = setup().await;
        let mut client = scaler.client.clone();
        scaler.targets.set_route(
            "ns",
            "quiet",
            RouteScaling {
                concurrency: Some(10.0),
                rate: None,
            },
        );
        a.set("ns/quiet", 0, 5);
        scaler.wait_for(|agg| agg.key("ns/quiet").is_some()).await;
        let sor = so_ref("ns", "quiet", &[("interceptorRoute", "quiet")]);
        assert!(
            !client
                .is_active(sor.clone())
                .await
                .expect("IsActive")
                .into_inner()
                .result
        );
        // One request starts and finishes between two polls: never seen in flight.
        a.set("ns/quiet", 0, 6);
        scaler
            .wait_for(|agg| agg.requests_seen("ns/quiet") == 1)
            .await;
        assert!(
            client
                .is_active(sor.clone())
                .await
                .expect("IsActive")
                .into_inner()
                .result,
            "a request since the previous report keeps the route active"
        );
        assert!(
            !client
                .is_active(sor.clone())
                .await
                .expect("IsActive")
                .into_inner()
                .result,
            "and idle again once reported"
        );
        scaler.stop().await;
    })
    .await;
}
