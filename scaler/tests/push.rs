//! Push activation: an interceptor's `/queue/watch` line reaches every open `StreamIsActive`
//! stream at once, not at the next poll tick; polling takes over when the push stream is not
//! available.

mod common;

use std::time::Duration;

use common::{FakeInterceptor, TestScaler, bounded, settings, so_ref};
use keda_http_scaler::proto::IsActiveResponse;
use keda_http_scaler::targets::RouteScaling;
use tonic::Streaming;

/// Far longer than any wait below: a message that arrives proves it did not wait for a tick.
const LONG_TICK: Duration = Duration::from_secs(60);
/// How long a push may take to show up (well under [`LONG_TICK`]).
const PUSH_BOUND: Duration = Duration::from_secs(20);

async fn next(stream: &mut Streaming<IsActiveResponse>) -> bool {
    tokio::time::timeout(PUSH_BOUND, stream.message())
        .await
        .expect("a message before the next tick or interval")
        .expect("stream ok")
        .expect("stream open")
        .result
}

fn concurrency_route(scaler: &TestScaler, name: &str) {
    scaler.targets.set_route(
        "ns",
        name,
        RouteScaling {
            concurrency: Some(10.0),
            rate: None,
        },
    );
}

#[tokio::test]
async fn idle_to_active_reaches_every_stream_without_waiting_for_the_tick() {
    bounded(async {
        let a = FakeInterceptor::start().await;
        a.set("ns/web", 0, 0);
        // Poll tick and stream interval both far away: only a push can deliver in time.
        let scaler = TestScaler::start(settings(LONG_TICK, LONG_TICK, true), &[&a]).await;
        concurrency_route(&scaler, "web");
        a.wait_watchers(1).await;
        scaler.wait_for(|agg| agg.key("ns/web").is_some()).await;

        let sor = so_ref("ns", "web", &[("interceptorRoute", "web")]);
        let mut first = scaler
            .client
            .clone()
            .stream_is_active(sor.clone())
            .await
            .expect("stream")
            .into_inner();
        let mut second = scaler
            .client
            .clone()
            .stream_is_active(sor)
            .await
            .expect("stream")
            .into_inner();
        // Each stream's first message comes at once.
        assert!(!next(&mut first).await);
        assert!(!next(&mut second).await);

        // 0 -> 1 in flight.
        a.set("ns/web", 1, 1);
        assert!(next(&mut first).await, "active pushed to the first stream");
        assert!(
            next(&mut second).await,
            "active pushed to the second stream"
        );

        // The request ends: idle again, and already reported, so inactive.
        a.set("ns/web", 0, 1);
        assert!(!next(&mut first).await);
        assert!(!next(&mut second).await);
        assert!(
            a.polls() <= 1,
            "at most the start-up poll: the pushes did the work"
        );
        drop((first, second));
        scaler.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_request_between_reports_is_reported_once() {
    bounded(async {
        let a = FakeInterceptor::start().await;
        a.set("ns/web", 0, 0);
        let scaler =
            TestScaler::start(settings(LONG_TICK, Duration::from_millis(100), true), &[&a]).await;
        concurrency_route(&scaler, "web");
        a.wait_watchers(1).await;
        scaler.wait_for(|agg| agg.key("ns/web").is_some()).await;
        let sor = so_ref("ns", "web", &[("interceptorRoute", "web")]);
        let mut stream = scaler
            .client
            .clone()
            .stream_is_active(sor)
            .await
            .expect("stream")
            .into_inner();
        assert!(!next(&mut stream).await);
        // A request that came and went between two snapshots (never seen in flight).
        a.set("ns/web", 0, 1);
        // Skip the periodic "false" messages that may precede the push...
        while !next(&mut stream).await {}
        // ...then, with no new request, the next report is idle.
        assert!(!next(&mut stream).await, "idle again after the report");
        drop(stream);
        scaler.stop().await;
    })
    .await;
}

#[tokio::test]
async fn polling_takes_over_when_the_push_stream_is_unavailable() {
    bounded(async {
        let a = FakeInterceptor::start().await;
        // An official interceptor: no /queue/watch.
        a.disable_watch();
        a.set("ns/web", 0, 0);
        let scaler = TestScaler::start(
            settings(Duration::from_millis(100), Duration::from_millis(100), true),
            &[&a],
        )
        .await;
        concurrency_route(&scaler, "web");
        scaler.wait_for(|agg| agg.key("ns/web").is_some()).await;
        let sor = so_ref("ns", "web", &[("interceptorRoute", "web")]);
        let mut stream = scaler
            .client
            .clone()
            .stream_is_active(sor)
            .await
            .expect("stream")
            .into_inner();
        assert!(!next(&mut stream).await);
        a.set("ns/web", 2, 2);
        while !next(&mut stream).await {}
        assert!(a.polls() >= 2);
        assert_eq!(scaler.state.lock().push_connected(), 0);
        drop(stream);
        scaler.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_broken_push_stream_falls_back_to_polling_and_reconnects() {
    bounded(async {
        let a = FakeInterceptor::start().await;
        a.set("ns/web", 0, 0);
        let scaler = TestScaler::start(
            settings(Duration::from_millis(100), Duration::from_millis(100), true),
            &[&a],
        )
        .await;
        scaler.wait_for(|agg| agg.push_connected() == 1).await;
        // The stream breaks and cannot be reopened for now: only polling can see the change.
        a.disable_watch();
        a.cut_watchers();
        a.set("ns/web", 5, 0);
        scaler.wait_for(|agg| agg.concurrency("ns/web") == 5).await;
        // The stream comes back: the scaler resubscribes.
        a.enable_watch();
        scaler
            .wait_for(|agg| agg.push_connected() == 1 && a.watches_opened() >= 2)
            .await;
        a.set("ns/web", 6, 0);
        scaler.wait_for(|agg| agg.concurrency("ns/web") == 6).await;
        scaler.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_replaced_interceptor_is_pruned_and_polled_without_push() {
    bounded(async {
        let a = FakeInterceptor::start().await;
        a.set("ns/web", 0, 0);
        let scaler = TestScaler::start(
            settings(Duration::from_millis(100), Duration::from_millis(100), true),
            &[&a],
        )
        .await;
        a.wait_watchers(1).await;
        scaler.wait_for(|agg| agg.push_connected() == 1).await;
        // The interceptor restarts on a new port: the old stream breaks; discovery moves on.
        let b = FakeInterceptor::start().await;
        b.disable_watch();
        b.set("ns/web", 4, 0);
        a.stop();
        scaler
            .interceptors
            .send(std::sync::Arc::new([b.addr].into_iter().collect()))
            .expect("scaler alive");
        scaler.wait_for(|agg| agg.concurrency("ns/web") == 4).await;
        assert_eq!(
            scaler.state.lock().endpoints(),
            1,
            "the departed pod is pruned"
        );
        scaler.stop().await;
    })
    .await;
}
