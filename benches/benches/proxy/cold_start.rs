//! Suite 4: cold start. Whether the interceptor holds a request for a target without ready
//! endpoints, and the wake latency measured by the `wake` helper process.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keda_http_benches::process::{Cores, http_status, pinned};
use keda_http_benches::report::{self, Section, Table};
use serde_json::json;

use super::{COLD_HOST, GOAL_WAKE_P99_US, ROLE, Settings, WAKE_CONFIG, wake};

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
    let levels = match result {
        wake::WakeResult::Skipped(why) => {
            let line = format!("needs cold start (issue 6): {why}");
            eprintln!("skipped: cold start: {line}");
            return Ok(Section::skipped(title, &line));
        }
        wake::WakeResult::Levels(levels) => levels,
    };
    let mut table = Table::new(&["held at once", "wakes", "p50", "p99", "max"]);
    let mut worst_p99: Option<f64> = None;
    for level in &levels {
        let l = level.latency;
        if let Some(l) = l {
            worst_p99 = Some(worst_p99.map_or(l.p99_us as f64, |w| w.max(l.p99_us as f64)));
        }
        table.row(vec![
            level.held.to_string(),
            l.map_or(0, |l| l.count).to_string(),
            report::latency(l.map(|l| l.p50_us as f64)),
            report::latency(l.map(|l| l.p99_us as f64)),
            report::latency(l.map(|l| l.max_us as f64)),
        ]);
    }
    let mut section = Section::new(title);
    section.table = table;
    section.notes.push(
        "time from the endpoint-ready event (the EndpointSource seam the EndpointSlice watch \
         feeds) to each held request reaching the backend; in-process interceptor on the proxy \
         core, clients and backend on the load core"
            .to_owned(),
    );
    section.notes.push(format!(
        "goal ≤ 2 ms p99 (worst level): {}",
        report::verdict(worst_p99, GOAL_WAKE_P99_US, true)
    ));
    section.data = json!({"levels": levels, "worst_p99_us": worst_p99});
    Ok(section)
}
