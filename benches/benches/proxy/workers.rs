//! Suite 2: workers. Our interceptor, not pinned to a core, with 2 Tokio workers against 1
//! (`TOKIO_WORKER_THREADS`, which the interceptor's multi-thread runtime reads; it has no
//! setting of its own), `wrk` pinned to the load core as in the throughput suite, repeated
//! and interleaved; the rps ratio is the median of per-repeat ratios.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use keda_http_benches::process::{Cores, wait_status};
use keda_http_benches::procfs;
use keda_http_benches::report::{self, Section, Table};
use keda_http_benches::stats::{self, Spread};
use serde_json::json;

use super::throughput::{MeasuredRun, measured_run};
use super::{GOAL_WORKERS_RATIO, HOST, Settings, bench_routes, start_ours_with};

pub(crate) fn workers(
    settings: &Settings,
    cores: Cores,
    bin: &Path,
    dir: &Path,
    backend: SocketAddr,
) -> anyhow::Result<Section> {
    let (routes, endpoints) = bench_routes(backend);
    let mut instances = Vec::new();
    for n in [1usize, 2] {
        let mut ours = start_ours_with(
            bin,
            None,
            n,
            dir,
            &format!("workers-{n}"),
            &routes,
            &endpoints,
        )?;
        wait_status(
            &mut ours.proc,
            ours.proxy,
            HOST,
            "/",
            200,
            Duration::from_secs(20),
        )?;
        instances.push((n, ours));
    }
    let tps = procfs::ticks_per_second();
    let mut rps: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut share: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<usize, u64> = BTreeMap::new();
    let mut paired = Vec::new();
    for rep in 0..settings.repeats {
        let mut this_rep = BTreeMap::new();
        for k in 0..instances.len() {
            let (n, ours) = &instances[(k + rep) % instances.len()];
            let MeasuredRun {
                result,
                wall,
                ticks: [ticks],
            } = measured_run(settings, &cores, ours.proxy, [Some(ours.proc.pid())])?;
            let used = ticks.and_then(|t| stats::core_share(t, tps, wall));
            eprintln!(
                "workers rep {} {n} worker(s): {:>9.0} rps, proxy CPU {} of a core",
                rep + 1,
                result.rps,
                report::num(used, 2)
            );
            rps.entry(*n).or_default().push(result.rps);
            share.entry(*n).or_default().extend(used);
            *errors.entry(*n).or_default() += result.errors;
            this_rep.insert(*n, result.rps);
        }
        if let (Some(one), Some(two)) = (this_rep.get(&1), this_rep.get(&2)) {
            paired.extend(stats::ratio(*two, *one));
        }
    }
    drop(instances);

    let mut table = Table::new(&[
        "Tokio workers",
        "rps (median, min–max)",
        "proxy core use",
        "errors",
    ]);
    for n in [1usize, 2] {
        let Some(r) = rps.get(&n).and_then(|v| Spread::of(v)) else {
            continue;
        };
        table.row(vec![
            n.to_string(),
            format!("{:.0} ({:.0}–{:.0})", r.median, r.min, r.max),
            share
                .get(&n)
                .and_then(|v| stats::median(v))
                .map_or_else(|| "–".to_owned(), |s| format!("{:.0}%", s * 100.0)),
            errors.get(&n).copied().unwrap_or(0).to_string(),
        ]);
    }
    let ratio = stats::median(&paired);
    let mut section = Section::new("Throughput with 2 Tokio workers vs 1 (proxy unpinned)");
    section.table = table;
    section.notes.push(format!(
        "our interceptor on any CPU with TOKIO_WORKER_THREADS=1 and =2 (two instances, \
         interleaved, order rotated per repeat); wrk -t1 -c{} and the backend on CPU {}; \
         2 workers ÷ 1: {} (goal ≥ {GOAL_WORKERS_RATIO}×: {})",
        settings.connections,
        cores.load,
        report::times(ratio),
        report::verdict(ratio, GOAL_WORKERS_RATIO, false),
    ));
    section.notes.push(
        "on a 2-core machine the load generator and the backend need one core, so the second \
         worker has little to gain; read this ratio on a machine with spare cores"
            .to_owned(),
    );
    let median = |n: usize| rps.get(&n).and_then(|v| stats::median(v));
    section.data = json!({
        "rps": {"1": median(1), "2": median(2)},
        "ratio": ratio,
        "per_repeat_ratio": paired,
        "runs_rps": rps.iter().map(|(n, v)| (n.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
    });
    Ok(section)
}
