//! Suite 3: latency at a given rate, from the open-loop generator (a child process of this
//! binary pinned to the load core), as added p50/p99 over direct.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use keda_http_benches::openloop::{OpenLoop, OpenLoopResult};
use keda_http_benches::process::{Cores, pinned};
use keda_http_benches::report::{self, Section, Table};
use keda_http_benches::stats;
use serde_json::json;

use super::{
    GOAL_ADDED_P99_VS_NGINX, HOST, NGINX, OPENLOOP_CONFIG, OURS, OVERLOAD_P50_US, Peer, ROLE,
    Settings,
};

/// Runs the open-loop helper (this binary, pinned to the load core) once.
fn openloop_child(config: &OpenLoop, cpu: usize) -> anyhow::Result<OpenLoopResult> {
    let exe = std::env::current_exe()?;
    let mut cmd = pinned(exe, Some(cpu));
    cmd.env(ROLE, "openloop")
        .env(OPENLOOP_CONFIG, serde_json::to_string(config)?);
    let out = cmd.output().context("run the open-loop helper")?;
    if !out.status.success() {
        bail!(
            "open-loop helper failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("open-loop output: {text}"))
}

pub(crate) fn latency(
    settings: &Settings,
    cores: Cores,
    peers: &[Peer],
    rate: f64,
    title: &str,
) -> anyhow::Result<Section> {
    let mut p50: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut p99: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut p999: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut added50: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut added99: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    let mut overloaded: BTreeMap<&str, usize> = BTreeMap::new();
    let mut overloaded_runs = Vec::new();
    let mut runs = Vec::new();
    for rep in 0..settings.repeats {
        let mut this_rep: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for k in 0..peers.len() {
            let peer = &peers[(k + rep) % peers.len()];
            let config = OpenLoop {
                addr: peer.addr,
                host: HOST.into(),
                path: "/".into(),
                rate,
                warmup: settings.warmup,
                duration: settings.seconds,
                connections: settings.connections as usize,
            };
            let result = openloop_child(&config, cores.load)?;
            let Some(l) = result.latency else {
                bail!("{}: no successful request at {rate:.0} rps", peer.name);
            };
            eprintln!(
                "latency rep {} {:>9}: {:.0} rps scheduled, p50 {} µs p99 {} µs p99.9 {} µs, {} errors",
                rep + 1,
                peer.name,
                rate,
                l.p50_us,
                l.p99_us,
                l.p999_us,
                result.errors
            );
            if l.p50_us > OVERLOAD_P50_US {
                overloaded_runs.push(format!("{} repeat {}", peer.name, rep + 1));
                *overloaded.entry(peer.name).or_default() += 1;
            }
            p50.entry(peer.name).or_default().push(l.p50_us as f64);
            p99.entry(peer.name).or_default().push(l.p99_us as f64);
            p999.entry(peer.name).or_default().push(l.p999_us as f64);
            *errors.entry(peer.name).or_default() += result.errors;
            this_rep.insert(peer.name, (l.p50_us as f64, l.p99_us as f64));
            runs.push(json!({"repeat": rep + 1, "peer": peer.name, "result": result}));
        }
        if let Some(&(d50, d99)) = this_rep.get("direct") {
            for (name, (v50, v99)) in &this_rep {
                if *name != "direct" {
                    added50.entry(name).or_default().push(v50 - d50);
                    added99.entry(name).or_default().push(v99 - d99);
                }
            }
        }
    }
    let mut table = Table::new(&[
        "peer",
        "rate",
        "p50",
        "p99",
        "p99.9",
        "added p50 over direct",
        "added p99 over direct",
        "errors",
    ]);
    let med = |m: &BTreeMap<&str, Vec<f64>>, k: &str| m.get(k).and_then(|v| stats::median(v));
    let mut added_p99 = serde_json::Map::new();
    let mut added_p50 = serde_json::Map::new();
    for peer in peers {
        let a50 = med(&added50, peer.name);
        let a99 = med(&added99, peer.name);
        if peer.name != "direct" {
            added_p50.insert(peer.name.into(), json!(a50));
            added_p99.insert(peer.name.into(), json!(a99));
        }
        table.row(vec![
            peer.name.to_owned(),
            format!("{rate:.0}/s"),
            report::latency(med(&p50, peer.name)),
            report::latency(med(&p99, peer.name)),
            report::latency(med(&p999, peer.name)),
            if peer.name == "direct" {
                "—".into()
            } else {
                report::latency(a50)
            },
            if peer.name == "direct" {
                "—".into()
            } else {
                report::latency(a99)
            },
            errors.get(peer.name).copied().unwrap_or(0).to_string(),
        ]);
    }
    let added_of = |name: &str| added_p99.get(name).and_then(serde_json::Value::as_f64);
    let ours_added = added_of(OURS);
    let nginx_added = added_of(NGINX).filter(|n| *n > 0.0);
    let ratio = ours_added
        .zip(nginx_added)
        .and_then(|(o, n)| stats::ratio(o, n));
    // A peer is overloaded when most of its repeats were.
    let is_overloaded =
        |name: &str| overloaded.get(name).copied().unwrap_or(0) * 2 > settings.repeats;
    let mut section = Section::new(title);
    section.table = table;
    section.notes.push(format!(
        "fixed rate {rate:.0} req/s, {} connections, latency from each request's scheduled send \
         time (no coordinated omission); {} s warm-up + {} s, {} repeats interleaved; medians \
         of repeats; added = peer − direct in the same repeat",
        settings.connections,
        settings.warmup.as_secs_f64(),
        settings.seconds.as_secs_f64(),
        settings.repeats,
    ));
    if !overloaded_runs.is_empty() {
        section.notes.push(format!(
            "overloaded (p50 > {} ms: requests queued because the machine could not sustain the \
             rate through that peer at that moment; such numbers measure the machine, not the \
             proxy): {}",
            OVERLOAD_P50_US / 1000,
            overloaded_runs.join(", ")
        ));
    }
    section.notes.push(format!(
        "our added p99 ÷ nginx's: {} (goal ≤ {GOAL_ADDED_P99_VS_NGINX}×: {})",
        report::times(ratio),
        if is_overloaded(OURS) {
            "not judged (overloaded)".to_owned()
        } else {
            report::verdict(ratio, GOAL_ADDED_P99_VS_NGINX, true)
        }
    ));
    let overloaded_json: serde_json::Map<String, serde_json::Value> = peers
        .iter()
        .map(|p| (p.name.to_owned(), json!(is_overloaded(p.name))))
        .collect();
    section.data = json!({
        "overloaded": overloaded_json,
        "rate": rate,
        "added_p50_us": added_p50,
        "added_p99_us": added_p99,
        "added_p99_ours_over_nginx": ratio,
        "runs": runs,
    });
    Ok(section)
}
