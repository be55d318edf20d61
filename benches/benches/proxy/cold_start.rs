//! Suite 5: cold start. Whether the interceptor holds a request for a target without ready
//! endpoints, and the wake latency measured by the `wake` helper process, with its direct
//! baseline (the same client opening as many fresh connections straight to the backend).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keda_http_benches::process::{Cores, http_status, pinned};
use keda_http_benches::report::{self, Section, Table};
use keda_http_benches::stats;
use serde_json::json;

use super::{COLD_HOST, GOAL_WAKE_VS_DIRECT, ROLE, Settings, WAKE_CONFIG, wake};

/// The median of per-round times, µs.
fn median_us(rounds: &[u64]) -> Option<f64> {
    let values: Vec<f64> = rounds.iter().map(|&v| v as f64).collect();
    stats::median(&values)
}

/// Whether a request for a target without ready endpoints is held (`Ok`) or answered at once
/// (`Err` with what came back).
pub(crate) fn holds_requests(proxy: SocketAddr) -> Result<(), String> {
    let t = Instant::now();
    match http_status(proxy, COLD_HOST, "/", Duration::from_secs(2)) {
        Some(status) => Err(format!(
            "a request for a target without ready endpoints was answered {status} after {:.0} ms \
             instead of being held",
            t.elapsed().as_secs_f64() * 1000.0
        )),
        None if t.elapsed() >= Duration::from_millis(1900) => Ok(()),
        None => Err("the probe request failed without a response".into()),
    }
}

pub(crate) fn cold_start(settings: &Settings, cores: Cores) -> anyhow::Result<Section> {
    let title = "Cold start: wake latency";
    let config = wake::WakeConfig {
        levels: vec![1, 100, 1000],
        wakes: settings.wakes,
        proxy_cpu: Some(cores.proxy),
    };
    let exe = std::env::current_exe()?;
    let mut cmd = pinned(exe, Some(cores.load));
    cmd.env(ROLE, "wake")
        .env(WAKE_CONFIG, serde_json::to_string(&config)?);
    let out = cmd.output().context("run the wake helper")?;
    if !out.status.success() {
        bail!(
            "wake helper failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let result: wake::WakeResult = serde_json::from_str(text.lines().last().unwrap_or_default())
        .with_context(|| format!("wake helper output: {text}"))?;
    let (levels, baseline) = match result {
        wake::WakeResult::Skipped(why) => {
            let line = format!("needs cold start (issue 6): {why}");
            eprintln!("skipped: cold start: {line}");
            return Ok(Section::skipped(title, &line));
        }
        wake::WakeResult::Levels(levels, baseline) => (levels, baseline),
    };
    let mut table = Table::new(&[
        "held at once",
        "rounds",
        "wakes",
        "p50",
        "p99",
        "max",
        "all at the backend (median of rounds)",
    ]);
    for level in &levels {
        let l = level.latency;
        table.row(vec![
            level.held.to_string(),
            level.rounds.to_string(),
            l.map_or(0, |l| l.count).to_string(),
            report::latency(l.map(|l| l.p50_us as f64)),
            report::latency(l.map(|l| l.p99_us as f64)),
            report::latency(l.map(|l| l.max_us as f64)),
            report::latency(median_us(&level.all_arrived_us)),
        ]);
    }
    let largest = levels.iter().max_by_key(|l| l.held);
    let held_all = largest.and_then(|l| median_us(&l.all_arrived_us));
    let direct_all = baseline.as_ref().and_then(|b| median_us(&b.all_arrived_us));
    if let Some(b) = &baseline {
        table.row(vec![
            format!("direct: {} fresh connections", b.requests),
            b.all_arrived_us.len().to_string(),
            b.requests.to_string(),
            String::new(),
            String::new(),
            String::new(),
            report::latency(direct_all),
        ]);
    }
    let ratio = held_all
        .zip(direct_all)
        .and_then(|(h, d)| stats::ratio(h, d));
    let mut section = Section::new(title);
    section.table = table;
    section.notes.push(
        "time from the endpoint-ready event (the EndpointSource seam the EndpointSlice watch \
         feeds) to each held request reaching the backend; in-process interceptor on the proxy \
         core, clients and backend on the load core"
            .to_owned(),
    );
    section.notes.push(
        "direct: the same client (hyper-util legacy client, a new pool per round) sending as \
         many requests at once straight to the backend, each on a fresh connection; from the \
         first send to the last arrival"
            .to_owned(),
    );
    section.notes.push(format!(
        "{} held requests, event → all at the backend ÷ direct: {} (goal ≤ {GOAL_WAKE_VS_DIRECT}×: {})",
        largest.map_or(0, |l| l.held),
        report::times(ratio),
        report::verdict(ratio, GOAL_WAKE_VS_DIRECT, true)
    ));
    section.data = json!({
        "levels": levels,
        "baseline": baseline,
        "all_arrived_us": {"held": held_all, "direct": direct_all, "ratio": ratio},
    });
    Ok(section)
}
