//! Suite 1: throughput and proxy CPU. `wrk` (closed loop) against each peer in turn, repeated,
//! with the proxy's and the backend's CPU time per request read from `/proc`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use keda_http_benches::process::Cores;
use keda_http_benches::procfs;
use keda_http_benches::report::{self, Section, Table};
use keda_http_benches::stats::{self, Spread};
use keda_http_benches::wrk::{WrkResult, WrkRun};
use serde_json::json;

use super::{GOAL_CPU_VS_MINIMAL, GOAL_CPU_VS_NGINX, HOST, MINIMAL, NGINX, OURS, Peer, Settings};

/// Results of one peer over the repeats.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct PeerThroughput {
    pub(crate) rps: Spread,
    p50_us: Spread,
    p99_us: Spread,
    pub(crate) cpu_us_per_request: Option<Spread>,
    proxy_core_share: Option<Spread>,
    backend_cpu_us_per_request: Option<Spread>,
    errors: u64,
    runs: Vec<serde_json::Value>,
}

pub(crate) fn throughput(
    settings: &Settings,
    cores: Cores,
    tps: u64,
    peers: &[Peer],
    backend_pid: u32,
    skipped_peers: &[String],
) -> anyhow::Result<(Section, BTreeMap<&'static str, PeerThroughput>)> {
    #[derive(Default)]
    struct Acc {
        rps: Vec<f64>,
        p50: Vec<f64>,
        p99: Vec<f64>,
        cpu: Vec<f64>,
        share: Vec<f64>,
        backend_cpu: Vec<f64>,
        errors: u64,
        runs: Vec<serde_json::Value>,
    }
    let mut acc: BTreeMap<&'static str, Acc> = BTreeMap::new();
    // Per repeat, ours/nginx and ours/minimal CPU per request (paired within the repeat).
    let mut paired_cpu_ratio = Vec::new();
    let mut paired_cpu_minimal = Vec::new();
    let mut paired_rps_ratio = Vec::new();
    let mut paired_direct_ratio = Vec::new();
    for rep in 0..settings.repeats {
        let mut this_rep: BTreeMap<&'static str, (WrkResult, Option<f64>)> = BTreeMap::new();
        // Rotate the order so that no peer always runs first (or right after another).
        for k in 0..peers.len() {
            let peer = &peers[(k + rep) % peers.len()];
            let load_before = procfs::loadavg();
            let MeasuredRun {
                result,
                wall,
                ticks: [ticks, backend_ticks],
            } = measured_run(settings, &cores, peer.addr, [peer.pid, Some(backend_pid)])?;
            let cpu = ticks.and_then(|t| stats::cpu_us_per_request(t, tps, result.requests));
            let share = ticks.and_then(|t| stats::core_share(t, tps, wall));
            let backend_cpu =
                backend_ticks.and_then(|t| stats::cpu_us_per_request(t, tps, result.requests));
            eprintln!(
                "throughput rep {} {:>9}: {:>9.0} rps p50 {:>7.0} µs p99 {:>7.0} µs proxy CPU {} µs/req",
                rep + 1,
                peer.name,
                result.rps,
                result.p50_us,
                result.p99_us,
                report::num(cpu, 2)
            );
            let a = acc.entry(peer.name).or_default();
            a.rps.push(result.rps);
            a.p50.push(result.p50_us);
            a.p99.push(result.p99_us);
            a.cpu.extend(cpu);
            a.share.extend(share);
            a.backend_cpu.extend(backend_cpu);
            a.errors += result.errors;
            a.runs.push(json!({
                "repeat": rep + 1,
                "wrk": result,
                "proxy_cpu_us_per_request": cpu,
                "proxy_core_share": share,
                "backend_cpu_us_per_request": backend_cpu,
                "load_before": load_before,
            }));
            this_rep.insert(peer.name, (result, cpu));
        }
        let cpu_of = |name: &str| this_rep.get(name).and_then(|(_, cpu)| *cpu);
        if let (Some(o), Some(n)) = (cpu_of(OURS), cpu_of(NGINX)) {
            paired_cpu_ratio.extend(stats::ratio(o, n));
        }
        if let (Some(o), Some(m)) = (cpu_of(OURS), cpu_of(MINIMAL)) {
            paired_cpu_minimal.extend(stats::ratio(o, m));
        }
        if let (Some((o, _)), Some((n, _))) = (this_rep.get(OURS), this_rep.get(NGINX)) {
            paired_rps_ratio.extend(stats::ratio(o.rps, n.rps));
        }
        if let (Some((o, _)), Some((d, _))) = (this_rep.get(OURS), this_rep.get("direct")) {
            paired_direct_ratio.extend(stats::ratio(o.rps, d.rps));
        }
    }

    let mut by_peer = BTreeMap::new();
    for peer in peers {
        let Some(a) = acc.remove(peer.name) else {
            continue;
        };
        let (Some(rps), Some(p50_us), Some(p99_us)) =
            (Spread::of(&a.rps), Spread::of(&a.p50), Spread::of(&a.p99))
        else {
            continue;
        };
        by_peer.insert(
            peer.name,
            PeerThroughput {
                rps,
                p50_us,
                p99_us,
                cpu_us_per_request: Spread::of(&a.cpu),
                proxy_core_share: Spread::of(&a.share),
                backend_cpu_us_per_request: Spread::of(&a.backend_cpu),
                errors: a.errors,
                runs: a.runs,
            },
        );
    }

    let mut table = Table::new(&[
        "peer",
        "rps (median, min–max)",
        "p50",
        "p99",
        "proxy CPU µs/req",
        "proxy core use",
        "rps vs direct",
        "errors",
    ]);
    let direct_rps = by_peer.get("direct").map(|t| t.rps.median);
    for peer in peers {
        let Some(t) = by_peer.get(peer.name) else {
            continue;
        };
        table.row(vec![
            peer.name.to_owned(),
            format!("{:.0} ({:.0}–{:.0})", t.rps.median, t.rps.min, t.rps.max),
            report::latency(Some(t.p50_us.median)),
            report::latency(Some(t.p99_us.median)),
            t.cpu_us_per_request.map_or_else(
                || "–".to_owned(),
                |c| format!("{:.2} ({:.2}–{:.2})", c.median, c.min, c.max),
            ),
            t.proxy_core_share
                .map_or_else(|| "–".to_owned(), |s| format!("{:.0}%", s.median * 100.0)),
            report::times(direct_rps.and_then(|d| stats::ratio(t.rps.median, d))),
            t.errors.to_string(),
        ]);
    }
    let cpu_ratio = stats::median(&paired_cpu_ratio);
    let cpu_ratio_minimal = stats::median(&paired_cpu_minimal);
    let rps_ratio = stats::median(&paired_rps_ratio);
    let direct_ratio = stats::median(&paired_direct_ratio);
    let mut section = Section::new("Throughput and proxy CPU (wrk, closed loop)");
    section.table = table;
    section.notes.push(format!(
        "wrk -t1 -c{} HTTP/1.1 keep-alive, {} s warm-up + {} s measured, {} repeats interleaved \
         (order rotated per repeat); medians shown; proxy on CPU {}, wrk + backend on CPU {}",
        settings.connections,
        settings.warmup.as_secs_f64(),
        settings.seconds.as_secs_f64(),
        settings.repeats,
        cores.proxy,
        cores.load,
    ));
    section.notes.push(format!(
        "ours/nginx: CPU per request {} (goal ≤ {GOAL_CPU_VS_NGINX}×: {}), rps {}; \
         ours/{MINIMAL}: CPU per request {} (goal ≤ {GOAL_CPU_VS_MINIMAL}×: {}); ours/direct \
         rps {} (medians of per-repeat ratios)",
        report::times(cpu_ratio),
        report::verdict(cpu_ratio, GOAL_CPU_VS_NGINX, true),
        report::times(rps_ratio),
        report::times(cpu_ratio_minimal),
        report::verdict(cpu_ratio_minimal, GOAL_CPU_VS_MINIMAL, true),
        report::times(direct_ratio),
    ));
    section.notes.push(format!(
        "{MINIMAL}: a few dozen lines of hyper + hyper-util (legacy client, keep-alive pool), \
         routes by Host, adds X-Forwarded-For; one Tokio worker, pinned like ours"
    ));
    section.notes.extend(skipped_peers.iter().cloned());
    section.data = json!({
        "peers": by_peer,
        "ratios": {
            "cpu_per_request_ours_over_nginx": cpu_ratio,
            "cpu_per_request_ours_over_minimal": cpu_ratio_minimal,
            "rps_ours_over_nginx": rps_ratio,
            "rps_ours_over_direct": direct_ratio,
            "per_repeat_cpu_ours_over_nginx": paired_cpu_ratio,
            "per_repeat_cpu_ours_over_minimal": paired_cpu_minimal,
        },
    });
    Ok((section, by_peer))
}

/// One wrk run as the throughput-style suites measure it: a warm-up (unmeasured), then the
/// measured run with the CPU ticks each of `pids` used during it (`None` for no process or
/// one that could not be read).
pub(crate) struct MeasuredRun<const N: usize> {
    pub(crate) result: WrkResult,
    /// Seconds the measured run took.
    pub(crate) wall: f64,
    pub(crate) ticks: [Option<u64>; N],
}

/// wrk (closed loop, `settings.connections`, on the load core) against `addr` with the bench
/// host: warm-up, then the measured run, reading the CPU ticks of `pids` around it.
pub(crate) fn measured_run<const N: usize>(
    settings: &Settings,
    cores: &Cores,
    addr: SocketAddr,
    pids: [Option<u32>; N],
) -> anyhow::Result<MeasuredRun<N>> {
    let run = |duration| WrkRun {
        addr,
        host: HOST.into(),
        path: "/".into(),
        connections: settings.connections,
        duration,
        cpu: Some(cores.load),
    };
    if !settings.warmup.is_zero() {
        run(settings.warmup).run()?;
    }
    let before = pids.map(|pid| pid.and_then(procfs::cpu_ticks));
    let t = Instant::now();
    let result = run(settings.seconds).run()?;
    let wall = t.elapsed().as_secs_f64();
    let after = pids.map(|pid| pid.and_then(procfs::cpu_ticks));
    let mut ticks = [None; N];
    for (i, tick) in ticks.iter_mut().enumerate() {
        *tick = before[i].zip(after[i]).map(|(b, a)| a.saturating_sub(b));
    }
    Ok(MeasuredRun {
        result,
        wall,
        ticks,
    })
}
