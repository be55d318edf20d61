//! Costs on the scaler's hot paths: applying one interceptor's snapshot to the aggregate (done
//! once per pod per tick, and per push line), and a windowed rate over a long history (done
//! per `GetMetrics` for rate metrics).

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use keda_http_api::queue::{QueueCount, QueueCounts};
use keda_http_scaler::aggregate::Aggregator;
use keda_http_scaler::rate::{RateConfig, RateHistory};

const PODS: u16 = 10;
const ROUTES: usize = 1_000;

fn snapshot(request_count: i64) -> QueueCounts {
    QueueCounts(
        (0..ROUTES)
            .map(|i| {
                (
                    format!("ns-{i}/route-{i}"),
                    QueueCount {
                        concurrency: 1,
                        request_count,
                    },
                )
            })
            .collect(),
    )
}

fn apply_push(c: &mut Criterion) {
    let addrs: BTreeSet<SocketAddr> = (0..PODS)
        .map(|p| SocketAddr::from(([127, 0, 0, 1], 40_000 + p)))
        .collect();
    let mut agg = Aggregator::new();
    agg.set_interceptors(&addrs);
    for addr in &addrs {
        agg.apply_push(Duration::ZERO, *addr, snapshot(0));
    }
    let first = *addrs.first().expect("pods");
    let mut tick = 0u64;
    c.bench_function(
        "aggregate/apply one pod's snapshot (10 pods x 1000 routes)",
        |b| {
            // Building the snapshot (as parsing would) is set-up, not measured.
            b.iter_batched(
                || {
                    tick += 1;
                    let now = Duration::from_millis(tick * 500);
                    (now, snapshot(i64::try_from(tick).unwrap_or(i64::MAX)))
                },
                |(now, counts)| black_box(agg.apply_push(now, first, counts)),
                BatchSize::LargeInput,
            )
        },
    );
}

fn window_average(c: &mut Criterion) {
    let config = RateConfig::new(
        Some(Duration::from_secs(3_600)),
        Some(Duration::from_secs(1)),
    );
    let mut history = RateHistory::new();
    history.retain_for(config);
    // An hour of 500 ms ticks, each with requests.
    for i in 0..7_200u64 {
        history.record(Duration::from_millis(i * 500), 3);
    }
    let now = Duration::from_millis(7_199 * 500);
    c.bench_function("rate/window average over 1 h of 500 ms samples", |b| {
        b.iter(|| black_box(history.window_average(black_box(now), config)))
    });
    let fine = RateConfig::new(
        Some(Duration::from_secs(1)),
        Some(Duration::from_millis(100)),
    );
    c.bench_function(
        "rate/window average 1 s / 100 ms over the same history",
        |b| b.iter(|| black_box(history.window_average(black_box(now), fine))),
    );
}

criterion_group!(benches, apply_push, window_average);
criterion_main!(benches);
