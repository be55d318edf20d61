use super::*;

fn avg(name: &str, target: f64, value: f64) -> MetricReading {
    MetricReading {
        name: name.to_owned(),
        target: MetricTarget::AverageValue(target),
        value,
    }
}

fn plain(name: &str, target: f64, value: f64) -> MetricReading {
    MetricReading {
        name: name.to_owned(),
        target: MetricTarget::Value(target),
        value,
    }
}

const B: Bounds = Bounds { min: 0, max: 100 };

fn no_windows() -> HpaConfig {
    HpaConfig {
        tolerance: DEFAULT_TOLERANCE,
        scale_up_stabilization: Duration::ZERO,
        scale_down_stabilization: Duration::ZERO,
    }
}

#[test]
fn hpa_formula_table() {
    // (current, metrics, bounds, expected replicas to write)
    let cases: Vec<(i32, Vec<MetricReading>, Bounds, Option<i32>)> = vec![
        // Exactly on target: keep.
        (1, vec![avg("m", 100.0, 100.0)], B, None),
        // 9% over target is within the 10% tolerance: keep.
        (1, vec![avg("m", 100.0, 109.0)], B, None),
        // Exactly 10% over: in float64 |1 - 1.1| is 0.10000000000000009 > 0.1, so the HPA (Go,
        // the same IEEE arithmetic) scales: ceil(1.1) = 2.
        (1, vec![avg("m", 100.0, 110.0)], B, Some(2)),
        // 10% under with 2 replicas: |1 - 180/200| = 0.09999999999999998 <= 0.1: keep.
        (2, vec![avg("m", 100.0, 180.0)], B, None),
        // 11% over: ceil(111 / 100) = 2.
        (1, vec![avg("m", 100.0, 111.0)], B, Some(2)),
        // ratio 250 / 200 = 1.25: ceil(2.5) = 3.
        (2, vec![avg("m", 100.0, 250.0)], B, Some(3)),
        // ratio 0.25: ceil(1) = 1.
        (4, vec![avg("m", 100.0, 100.0)], B, Some(1)),
        // ratio 0.933: within tolerance, keep 3.
        (3, vec![avg("m", 100.0, 280.0)], B, None),
        // ratio 0.897 is outside, but ceil(2.69) = 3 = current: nothing to write.
        (3, vec![avg("m", 100.0, 269.0)], B, None),
        // ratio 0.6: ceil(1.8) = 2.
        (3, vec![avg("m", 100.0, 180.0)], B, Some(2)),
        // No load: the HPA's floor is max(min, 1) = 1; scaling to zero is KEDA's job.
        (10, vec![avg("m", 100.0, 0.0)], B, Some(1)),
        // Clamped to maxReplicaCount.
        (
            2,
            vec![avg("m", 100.0, 1000.0)],
            Bounds { min: 0, max: 5 },
            Some(5),
        ),
        // Clamped to minReplicaCount.
        (
            3,
            vec![avg("m", 100.0, 0.0)],
            Bounds { min: 3, max: 5 },
            None,
        ),
        (
            5,
            vec![avg("m", 100.0, 0.0)],
            Bounds { min: 3, max: 5 },
            Some(3),
        ),
        // Fractional targets (targetSizeFloat): ceil(7 / 2.5) = 3.
        (1, vec![avg("m", 2.5, 7.0)], B, Some(3)),
        // Value metrics scale the current count by the ratio: ceil(3 × 2) = 6.
        (2, vec![plain("m", 100.0, 300.0)], B, Some(6)),
        (2, vec![plain("m", 100.0, 105.0)], B, None),
        (4, vec![plain("m", 100.0, 50.0)], B, Some(2)),
        // Several metrics: the largest proposal wins.
        (
            1,
            vec![avg("a", 100.0, 250.0), avg("b", 10.0, 71.0)],
            B,
            Some(8),
        ),
        (
            4,
            vec![avg("a", 100.0, 100.0), avg("b", 10.0, 25.0)],
            B,
            Some(3),
        ),
        // A non-positive target is ignored; with nothing usable the HPA does nothing.
        (2, vec![avg("m", 0.0, 500.0)], B, None),
        (2, vec![], B, None),
        // At zero replicas the HPA is disabled.
        (0, vec![avg("m", 1.0, 500.0)], B, None),
    ];
    for (i, (current, readings, bounds, expected)) in cases.into_iter().enumerate() {
        let mut hpa = Hpa::new(no_windows());
        let got = hpa.sync(&readings, current, bounds, Instant::now());
        assert_eq!(got, expected, "case {i}: current {current}, {readings:?}");
    }
}

#[test]
fn proposal_saturates_instead_of_overflowing() {
    let r = avg("m", 1e-300, 1e300);
    assert_eq!(hpa_proposal(&r, 1, DEFAULT_TOLERANCE), Some(i32::MAX));
    let r = avg("m", 1.0, f64::NAN);
    assert_eq!(hpa_proposal(&r, 1, DEFAULT_TOLERANCE), Some(0));
}

#[tokio::test(start_paused = true)]
async fn scale_down_waits_for_the_stabilization_window() {
    let mut hpa = Hpa::new(HpaConfig {
        scale_down_stabilization: Duration::from_secs(60),
        ..HpaConfig::default()
    });
    let t0 = Instant::now();
    assert_eq!(hpa.sync(&[avg("m", 1.0, 5.0)], 1, B, t0), Some(5));
    // Load gone 10 s later: the 5 of the window holds the count.
    let t1 = t0 + Duration::from_secs(10);
    assert_eq!(hpa.sync(&[avg("m", 1.0, 0.0)], 5, B, t1), None);
    // Once the 5 is older than the window, the largest remembered proposal is 1.
    let t2 = t0 + Duration::from_secs(61);
    assert_eq!(hpa.sync(&[avg("m", 1.0, 0.0)], 5, B, t2), Some(1));
}

#[tokio::test(start_paused = true)]
async fn scale_up_waits_for_its_stabilization_window() {
    let mut hpa = Hpa::new(HpaConfig {
        scale_up_stabilization: Duration::from_secs(30),
        scale_down_stabilization: Duration::ZERO,
        ..HpaConfig::default()
    });
    let t0 = Instant::now();
    assert_eq!(hpa.sync(&[avg("m", 1.0, 1.0)], 1, B, t0), None);
    // A spike: the smallest proposal of the window (1) caps the scale-up.
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(hpa.sync(&[avg("m", 1.0, 4.0)], 1, B, t1), None);
    // The window has moved past the 1: scale up to the smallest remaining proposal.
    let t2 = t0 + Duration::from_secs(31);
    assert_eq!(hpa.sync(&[avg("m", 1.0, 6.0)], 1, B, t2), Some(4));
}

fn spec(min: i32, cooldown: u64, initial: u64) -> ExecutorSpec {
    ExecutorSpec {
        bounds: Bounds { min, max: 10 },
        cooldown: Duration::from_secs(cooldown),
        initial_cooldown: Duration::from_secs(initial),
    }
}

#[tokio::test(start_paused = true)]
async fn executor_activates_from_zero() {
    let t0 = Instant::now();
    let mut ex = Executor::new(spec(0, 30, 0), t0);
    assert_eq!(ex.on_activity(false, 0, t0), None);
    assert_eq!(ex.on_activity(true, 0, t0), Some(1));
    assert_eq!(ex.last_active(), Some(t0));
    // Already running: only the last active time moves.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(ex.on_activity(true, 3, t1), None);
    assert_eq!(ex.last_active(), Some(t1));
}

#[tokio::test(start_paused = true)]
async fn executor_activates_to_min_when_min_is_set() {
    let t0 = Instant::now();
    let mut ex = Executor::new(spec(2, 30, 0), t0);
    assert_eq!(ex.on_activity(true, 0, t0), Some(2));
    // Below min even while inactive: back to min.
    assert_eq!(ex.on_activity(false, 1, t0), Some(2));
    // At or above min and inactive: the HPA's business, never zero.
    let t1 = t0 + Duration::from_secs(3600);
    assert_eq!(ex.on_activity(false, 4, t1), None);
}

#[tokio::test(start_paused = true)]
async fn executor_scales_to_zero_after_cooldown() {
    let t0 = Instant::now();
    let mut ex = Executor::new(spec(0, 30, 0), t0);
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(ex.on_activity(true, 0, t1), Some(1));
    let table = [(10, None), (30, None), (31, Some(0))];
    for (after, expected) in table {
        let now = t1 + Duration::from_secs(after);
        assert_eq!(ex.on_activity(false, 2, now), expected, "{after}s after");
    }
    // At zero and inactive: nothing to do.
    assert_eq!(ex.on_activity(false, 0, t1 + Duration::from_secs(40)), None);
}

#[tokio::test(start_paused = true)]
async fn executor_honours_initial_cooldown() {
    let t0 = Instant::now();
    // Never active (someone else scaled it up): the cooldown does not apply, only the initial one.
    let mut ex = Executor::new(spec(0, 300, 60), t0);
    assert_eq!(ex.on_activity(false, 1, t0 + Duration::from_secs(30)), None);
    assert_eq!(
        ex.on_activity(false, 1, t0 + Duration::from_secs(61)),
        Some(0)
    );
}
