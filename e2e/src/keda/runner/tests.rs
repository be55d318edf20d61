use std::sync::Mutex;

use futures::FutureExt;
use tokio::sync::watch;

use super::*;
use crate::keda::decision::Bounds;
use crate::keda::fake::FakeScaler;

/// A workload whose replica count is a watch channel; every write and report is recorded.
struct FakeTarget {
    replicas: watch::Sender<i32>,
    reports: watch::Sender<Vec<Report>>,
    writes: Mutex<Vec<(Instant, i32)>>,
}

impl FakeTarget {
    fn new(replicas: i32) -> Arc<Self> {
        Arc::new(Self {
            replicas: watch::channel(replicas).0,
            reports: watch::channel(Vec::new()).0,
            writes: Mutex::new(Vec::new()),
        })
    }

    async fn wait_replicas(&self, n: i32) {
        let mut rx = self.replicas.subscribe();
        tokio::time::timeout(Duration::from_secs(3600), rx.wait_for(|&r| r == n))
            .await
            .unwrap_or_else(|_| panic!("replicas never became {n}; writes {:?}", self.writes))
            .unwrap();
    }

    async fn wait_report(&self, pred: impl Fn(&Report) -> bool) {
        let mut rx = self.reports.subscribe();
        tokio::time::timeout(
            Duration::from_secs(3600),
            rx.wait_for(|r| r.last().is_some_and(&pred)),
        )
        .await
        .expect("report never came")
        .unwrap();
    }

    fn writes(&self) -> Vec<(Instant, i32)> {
        self.writes.lock().unwrap().clone()
    }
}

impl ScaleTarget for FakeTarget {
    fn replicas(&self) -> BoxFuture<'_, Result<i32, TargetError>> {
        futures::future::ready(Ok(*self.replicas.borrow())).boxed()
    }

    fn scale(&self, replicas: i32) -> BoxFuture<'_, Result<(), TargetError>> {
        self.writes.lock().unwrap().push((Instant::now(), replicas));
        self.replicas.send_replace(replicas);
        futures::future::ready(Ok(())).boxed()
    }

    fn report(&self, status: &Report) -> BoxFuture<'_, Result<(), TargetError>> {
        self.reports.send_modify(|r| r.push(status.clone()));
        futures::future::ready(Ok(())).boxed()
    }
}

fn trigger(scaler: &FakeScaler, push: bool) -> Trigger {
    Trigger {
        push,
        so_ref: ScaledObjectRef {
            name: "app".into(),
            namespace: "default".into(),
            scaler_metadata: [("interceptorRoute".into(), "app".into())].into(),
        },
        value_metric: false,
        scaler: Arc::new(scaler.clone()),
    }
}

fn timing(polling: u64, hpa_sync: u64) -> Timing {
    Timing {
        polling: Duration::from_secs(polling),
        hpa_sync: Duration::from_secs(hpa_sync),
        backoff_initial: Duration::from_secs(2),
        backoff_max: Duration::from_secs(60),
    }
}

fn spec(min: i32, max: i32, cooldown: u64) -> ExecutorSpec {
    ExecutorSpec {
        bounds: Bounds { min, max },
        cooldown: Duration::from_secs(cooldown),
        initial_cooldown: Duration::ZERO,
    }
}

fn no_windows() -> HpaConfig {
    HpaConfig {
        scale_down_stabilization: Duration::ZERO,
        ..HpaConfig::default()
    }
}

fn start(
    triggers: Vec<Trigger>,
    spec: ExecutorSpec,
    hpa: HpaConfig,
    timing: Timing,
    target: &Arc<FakeTarget>,
) -> tokio_util::task::AbortOnDropHandle<()> {
    let target: Arc<dyn ScaleTarget> = target.clone();
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(run(
        triggers,
        spec,
        hpa,
        timing,
        target,
        Instant::now(),
    )))
}

#[tokio::test(start_paused = true)]
async fn one_streamed_true_activates_from_zero() {
    let scaler = FakeScaler::new();
    scaler.set_metric("http_app_concurrency", 100.0, 0.0);
    let target = FakeTarget::new(0);
    // Polls and HPA syncs an hour apart: only the stream can wake the loop.
    let _run = start(
        vec![trigger(&scaler, true)],
        spec(0, 10, 300),
        no_windows(),
        timing(3600, 3600),
        &target,
    );
    scaler.wait_streams_opened(1).await;
    target.wait_report(|r| !r.active && r.ready.is_ok()).await;
    let polls_before = scaler.refs().len();
    assert_eq!(scaler.push(true), 1);
    target.wait_replicas(1).await;
    // The activation came from the pushed message, not from another poll.
    assert_eq!(scaler.refs().len(), polls_before);
    target.wait_report(|r| r.active).await;
}

#[tokio::test(start_paused = true)]
async fn replica_counts_follow_the_hpa_formula() {
    let scaler = FakeScaler::new();
    scaler.set_active(true);
    scaler.set_metric("m", 100.0, 0.0);
    let target = FakeTarget::new(0);
    let _run = start(
        vec![trigger(&scaler, false)],
        spec(0, 6, 300),
        no_windows(),
        timing(1, 2),
        &target,
    );
    // The first poll activates: 0 -> 1.
    target.wait_replicas(1).await;
    // (metric value, replicas the formula predicts from the previous count)
    let table = [
        (250.0, 3),  // 250 / (100 × 1) = 2.5, outside 10 %: ceil(2.5)
        (1000.0, 6), // ceil(10) clamped to maxReplicaCount 6
        (90.0, 1),   // 90 / 600 = 0.15: ceil(0.9)
    ];
    for (value, expected) in table {
        scaler.set_metric("m", 100.0, value);
        target.wait_replicas(expected).await;
    }
    // 105 / (100 × 1) = 1.05 is within the tolerance: two more syncs write nothing. (Paused
    // clock: the sleep only lets the syncs run; absence of a write has no event to await.)
    scaler.set_metric("m", 100.0, 105.0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let counts: Vec<i32> = target.writes().iter().map(|&(_, n)| n).collect();
    assert_eq!(counts, vec![1, 3, 6, 1]);
}

#[tokio::test(start_paused = true)]
async fn returns_to_zero_after_cooldown() {
    let scaler = FakeScaler::new();
    scaler.set_metric("m", 100.0, 0.0);
    let target = FakeTarget::new(0);
    let _run = start(
        vec![trigger(&scaler, true)],
        spec(0, 10, 30),
        no_windows(),
        timing(1, 1),
        &target,
    );
    scaler.wait_streams_opened(1).await;
    scaler.push(true);
    target.wait_replicas(1).await;
    let active_at = Instant::now();
    // Polls and further stream messages now say inactive.
    scaler.push(false);
    target.wait_replicas(0).await;
    let writes = target.writes();
    assert_eq!(
        writes.iter().map(|&(_, n)| n).collect::<Vec<_>>(),
        vec![1, 0]
    );
    // Paused clock: the scale to zero happened after the cooldown, not before.
    assert!(writes[1].0 - active_at > Duration::from_secs(30));
    target.wait_report(|r| !r.active).await;
}

#[tokio::test(start_paused = true)]
async fn broken_stream_is_reopened_with_backoff() {
    let scaler = FakeScaler::new();
    let target = FakeTarget::new(0);
    let _run = start(
        vec![trigger(&scaler, true)],
        spec(0, 10, 300),
        no_windows(),
        timing(3600, 3600),
        &target,
    );
    scaler.wait_streams_opened(1).await;
    scaler.break_streams();
    scaler.wait_streams_opened(2).await;
    // The reopened stream works.
    scaler.push(true);
    target.wait_replicas(1).await;
}

#[tokio::test(start_paused = true)]
async fn failing_scaler_makes_the_scaled_object_not_ready() {
    let scaler = FakeScaler::new();
    scaler.set_failing(true);
    let target = FakeTarget::new(0);
    let _run = start(
        vec![trigger(&scaler, false)],
        spec(0, 10, 300),
        no_windows(),
        timing(1, 1),
        &target,
    );
    target.wait_report(|r| r.ready.is_err()).await;
    scaler.set_failing(false);
    scaler.set_active(true);
    target.wait_replicas(1).await;
    target.wait_report(|r| r.ready.is_ok() && r.active).await;
}

#[tokio::test(start_paused = true)]
async fn min_replicas_are_restored_while_idle() {
    let scaler = FakeScaler::new();
    let target = FakeTarget::new(0);
    let _run = start(
        vec![trigger(&scaler, false)],
        spec(2, 10, 0),
        no_windows(),
        timing(1, 1),
        &target,
    );
    target.wait_replicas(2).await;
}
