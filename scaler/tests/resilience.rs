//! Failure handling: a hung interceptor never blocks GetMetrics; health follows interceptor
//! reachability; metrics have the official names; shutdown is graceful.

mod common;

use std::time::Duration;

use common::{FakeInterceptor, TestScaler, bounded, by_name, metrics_req, settings, so_ref};
use keda_http_scaler::Settings;
use keda_http_scaler::targets::RouteScaling;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TICK: Duration = Duration::from_millis(100);

fn route(scaler: &TestScaler) {
    scaler.targets.set_route(
        "ns",
        "web",
        RouteScaling {
            concurrency: Some(10.0),
            rate: None,
        },
    );
}

#[tokio::test]
async fn a_hung_interceptor_never_blocks_get_metrics() {
    bounded(async {
        let healthy = FakeInterceptor::start().await;
        let hung = FakeInterceptor::start().await;
        healthy.set("ns/web", 2, 0);
        hung.hang_queue(true);
        // A fetch timeout far longer than the test: the hung fetch is still in flight below.
        let scaler = TestScaler::start(
            Settings {
                fetch_timeout: Duration::from_secs(600),
                ..settings(TICK, TICK, false)
            },
            &[&healthy, &hung],
        )
        .await;
        route(&scaler);
        hung.wait_hung(1).await;
        // The healthy pod's answer is applied without waiting for the hung one.
        scaler.wait_for(|agg| agg.concurrency("ns/web") == 2).await;
        let sor = so_ref("ns", "web", &[("interceptorRoute", "web")]);
        let mut client = scaler.client.clone();
        for _ in 0..3 {
            let values = client
                .get_metrics(metrics_req(&sor, ""))
                .await
                .expect("GetMetrics")
                .into_inner()
                .metric_values;
            assert_eq!(by_name(&values)["http_web_concurrency"], (0, 2.0));
            assert!(
                client
                    .is_active(sor.clone())
                    .await
                    .expect("IsActive")
                    .into_inner()
                    .result
            );
        }
        assert!(
            hung.hung() >= 1,
            "answered while the hung fetch was still pending"
        );
        // The hung pod ends up a polled pod like any other once it answers again; here we
        // just stop.
        scaler.stop().await;
    })
    .await;
}

#[tokio::test]
async fn health_goes_not_serving_when_every_interceptor_is_unreachable() {
    bounded(async {
        let a = FakeInterceptor::start().await;
        a.set("ns/web", 1, 0);
        let scaler = TestScaler::start(settings(TICK, TICK, false), &[&a]).await;
        let mut health = HealthClient::new(scaler.channel.clone());
        let mut watch = health
            .watch(HealthCheckRequest {
                service: "readiness".to_owned(),
            })
            .await
            .expect("watch")
            .into_inner();
        // Wait for SERVING (the first status may be NOT_SERVING before the first poll).
        loop {
            let status = watch.message().await.expect("ok").expect("open").status;
            if status == ServingStatus::Serving as i32 {
                break;
            }
        }
        // The only interceptor goes away; concurrency stays cached, health drops after 2 ticks.
        a.stop();
        loop {
            let status = watch.message().await.expect("ok").expect("open").status;
            if status == ServingStatus::NotServing as i32 {
                break;
            }
        }
        let liveness = health
            .check(HealthCheckRequest {
                service: "liveness".to_owned(),
            })
            .await
            .expect("check")
            .into_inner()
            .status;
        assert_eq!(liveness, ServingStatus::NotServing as i32);
        assert_eq!(
            scaler.state.lock().concurrency("ns/web"),
            1,
            "last known value kept"
        );
        let text = keda_http_scaler::metrics::render(&scaler.registry.lock().expect("registry"));
        assert!(text.contains("scaler_pinger_endpoints 1"), "{text}");
        assert!(text.contains("scaler_pinger_unreachable_pods 1"), "{text}");
        assert!(
            !text.contains("scaler_pinger_fetch_errors_total 0"),
            "{text}"
        );
        drop(watch);
        scaler.stop().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_reports_not_serving_and_ends_open_streams() {
    bounded(async {
        let a = FakeInterceptor::start().await;
        a.set("ns/web", 1, 0);
        let scaler = TestScaler::start(settings(TICK, TICK, true), &[&a]).await;
        route(&scaler);
        let mut health = HealthClient::new(scaler.channel.clone());
        let mut watch = health
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("watch")
            .into_inner();
        assert_eq!(
            watch.message().await.expect("ok").expect("open").status,
            ServingStatus::Serving as i32
        );
        let sor = so_ref("ns", "web", &[("interceptorRoute", "web")]);
        let mut stream = scaler
            .client
            .clone()
            .stream_is_active(sor)
            .await
            .expect("stream")
            .into_inner();
        assert!(stream.message().await.expect("ok").expect("open").result);
        let stopping = tokio::spawn(scaler.stop());
        // The overall health turns NOT_SERVING before the server goes.
        loop {
            match watch.message().await {
                Ok(Some(msg)) if msg.status == ServingStatus::NotServing as i32 => break,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("health watch ended before NOT_SERVING"),
            }
        }
        drop(watch);
        // The activity stream ends instead of holding the shutdown.
        while let Ok(Some(_)) = stream.message().await {}
        stopping.await.expect("stopped cleanly");
    })
    .await;
}
