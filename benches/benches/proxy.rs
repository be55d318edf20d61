//! Whole-system benchmarks (`cargo bench -p keda-http-benches --bench proxy`), side by side in
//! one run so that ratios are comparable even on a busy machine:
//!
//! 1. throughput and proxy CPU: `wrk` against the backend directly (the ceiling), through our
//!    interceptor (release binary, one Tokio worker) and through nginx (one process);
//! 2. latency at half of nginx's max rate, from an open-loop generator (a child process of
//!    this binary): added p50/p99 over direct;
//! 3. activation: first request at an idle route → `StreamIsActive` says true (an in-process
//!    scaler over the interceptor's `/queue/watch`);
//! 4. cold start (wake latency, bytes per held request): run only when the interceptor holds
//!    requests for a target without ready endpoints, else a skip line;
//! 5. memory: RSS idle, with 10,000 routes, and over a soak under load.
//!
//! The proxy is pinned to CPU 0, load generator and backend to CPU 1 (`taskset`). Settings
//! come from the environment (`BENCH_SECONDS`, `BENCH_WARMUP_SECONDS`, `BENCH_REPEATS`,
//! `BENCH_CONNECTIONS`, `BENCH_SOAK_SECONDS`, `BENCH_ACTIVATIONS`, `BENCH_ROUTES`,
//! `BENCH_HELD`, `BENCH_SUITES`, `BENCH_SKIP_BUILD`); the report is printed and written to
//! `target/bench-results/`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keda_http_benches::openloop::{self, OpenLoop, OpenLoopResult};
use keda_http_benches::process::{Cores, Proc, free_port, http_status, pinned, wait_status, which};
use keda_http_benches::procfs::{self, Machine};
use keda_http_benches::report::{self, Report, Section, Table};
use keda_http_benches::stats::{self, Samples, Spread};
use keda_http_benches::wrk::{WrkResult, WrkRun};
use keda_http_benches::{criterion_results, env_secs, env_u64, nginx, routes, target_dir};
use serde_json::json;

#[path = "proxy/wake.rs"]
mod wake;

/// Environment variable that turns this binary into a helper process.
const ROLE: &str = "KEDA_BENCH_ROLE";
/// The open-loop helper's configuration (JSON).
const OPENLOOP_CONFIG: &str = "KEDA_BENCH_OPENLOOP";
/// The wake helper's configuration (JSON).
const WAKE_CONFIG: &str = "KEDA_BENCH_WAKE";

/// The route every load suite uses.
const HOST: &str = "bench.example.com";
const ROUTE: &str = "hello";
/// A route whose target never has endpoints (cold-start probes).
const COLD_HOST: &str = "cold.example.com";
const COLD_ROUTE: &str = "cold";

/// Goals from the issue (judged, never asserted).
const GOAL_CPU_RATIO: f64 = 0.9;
const GOAL_ADDED_P99_US: f64 = 300.0;
const GOAL_WAKE_P99_US: f64 = 2_000.0;
const GOAL_ACTIVATION_US: f64 = 20_000.0;
const GOAL_LOOKUP_NS: f64 = 200.0;
const GOAL_IDLE_RSS_KIB: u64 = 16 * 1024;
const GOAL_HELD_BYTES: f64 = 2_048.0;
/// An open-loop run whose median latency passes this queued: the rate was not sustained.
const OVERLOAD_P50_US: u64 = 100_000;

fn main() -> anyhow::Result<()> {
    if let Ok(role) = std::env::var(ROLE) {
        return match role.as_str() {
            "openloop" => openloop_role(),
            "wake" => {
                let config: wake::WakeConfig = serde_json::from_str(
                    &std::env::var(WAKE_CONFIG).context("the wake configuration")?,
                )?;
                println!("{}", serde_json::to_string(&wake::run(&config)?)?);
                Ok(())
            }
            other => bail!("unknown {ROLE}={other}"),
        };
    }
    // `cargo bench` passes `--bench` (and maybe a filter); a filter that names none of our
    // suites means someone asked criterion for something else, so there is nothing to do.
    // Option values (`--measurement-time 10` meant for criterion) are not filters either.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            let after_option = *i > 0 && args[i - 1].starts_with("--") && args[i - 1] != "--bench";
            !a.starts_with("--") && !after_option
        })
        .map(|(_, a)| a)
        .collect();
    if !filter.is_empty() && !filter.iter().any(|f| "proxy".contains(f.as_str())) {
        return Ok(());
    }
    let settings = Settings::from_env();
    let report = run(&settings)?;
    let md = report.markdown();
    println!("\n## keda-http benchmark report\n\n{md}");
    let dir = target_dir().join("bench-results");
    let stem = format!("proxy-{}", report.started.replace(':', ""));
    for path in report.write(&dir, &stem)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The helper process: one open-loop run, result as JSON on stdout.
fn openloop_role() -> anyhow::Result<()> {
    let config: OpenLoop = serde_json::from_str(
        &std::env::var(OPENLOOP_CONFIG).context("the open-loop configuration")?,
    )?;
    let result = openloop::run(&config)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize)]
struct Settings {
    warmup: Duration,
    seconds: Duration,
    repeats: usize,
    connections: u32,
    soak: Duration,
    activations: usize,
    wakes: usize,
    routes: usize,
    held: usize,
    suites: Vec<String>,
    skip_build: bool,
}

impl Settings {
    fn from_env() -> Self {
        let suites = std::env::var("BENCH_SUITES")
            .unwrap_or_else(|_| "throughput,latency,activation,coldstart,memory".into())
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Self {
            warmup: env_secs("BENCH_WARMUP_SECONDS", 2.0),
            seconds: env_secs("BENCH_SECONDS", 10.0),
            repeats: env_u64("BENCH_REPEATS", 3).max(1) as usize,
            connections: env_u64("BENCH_CONNECTIONS", 64).max(1) as u32,
            soak: env_secs("BENCH_SOAK_SECONDS", 60.0),
            activations: env_u64("BENCH_ACTIVATIONS", 30).max(1) as usize,
            wakes: env_u64("BENCH_WAKES", 100).max(1) as usize,
            routes: env_u64("BENCH_ROUTES", 10_000) as usize,
            held: env_u64("BENCH_HELD", 10_000) as usize,
            suites,
            skip_build: env_u64("BENCH_SKIP_BUILD", 0) == 1,
        }
    }

    fn wants(&self, suite: &str) -> bool {
        self.suites.iter().any(|s| s == suite || s == "all")
    }
}

/// Utc now as RFC 3339 (from `date`, to avoid a time crate for one string).
fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-time".into())
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("keda-http-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds (or finds) the release binaries of the interceptor and the hello backend.
fn binaries(settings: &Settings) -> anyhow::Result<(PathBuf, PathBuf)> {
    let release = target_dir().join("release");
    if !settings.skip_build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("building the release interceptor and hello binaries…");
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "keda-http-interceptor",
                "-p",
                "hello",
            ])
            .status()
            .context("run cargo build")?;
        if !status.success() {
            bail!("cargo build --release -p keda-http-interceptor -p hello failed ({status})");
        }
    }
    let interceptor = release.join("keda-http-interceptor");
    let hello = release.join("hello");
    for bin in [&interceptor, &hello] {
        if !bin.is_file() {
            bail!(
                "{} is missing (build it, or unset BENCH_SKIP_BUILD)",
                bin.display()
            );
        }
    }
    Ok((interceptor, hello))
}

/// The hello backend on the load core.
fn start_backend(hello: &Path, cores: Cores, dir: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = pinned(hello, Some(cores.load));
    cmd.env("PORT", port.to_string())
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("TOKIO_WORKER_THREADS", "1")
        .env("RUST_LOG", "warn");
    let mut proc = Proc::spawn("hello", cmd, Some(&dir.join("hello.log")))?;
    wait_status(
        &mut proc,
        addr,
        "localhost",
        "/",
        200,
        Duration::from_secs(20),
    )?;
    Ok((proc, addr))
}

/// A running interceptor (release binary).
struct Ours {
    proc: Proc,
    proxy: SocketAddr,
    admin: SocketAddr,
}

/// Starts our interceptor on the proxy core with routes and endpoints from files.
fn start_ours(
    bin: &Path,
    cores: Cores,
    dir: &Path,
    name: &str,
    routes: &[serde_json::Value],
    endpoints: &serde_json::Value,
) -> anyhow::Result<Ours> {
    let routes_file = dir.join(format!("{name}-routes.json"));
    let endpoints_file = dir.join(format!("{name}-endpoints.json"));
    std::fs::write(&routes_file, serde_json::to_vec(routes)?)?;
    std::fs::write(&endpoints_file, serde_json::to_vec(endpoints)?)?;
    let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut cmd = pinned(bin, Some(cores.proxy));
    cmd.env("KEDA_HTTP_PROXY_PORT", proxy.port().to_string())
        .env("KEDA_HTTP_ADMIN_PORT", admin.port().to_string())
        .env("KEDA_HTTP_BIND_ADDRESS", "127.0.0.1")
        .env("KEDA_HTTP_ROUTES_FILE", &routes_file)
        .env("KEDA_HTTP_ENDPOINTS_FILE", &endpoints_file)
        .env("KEDA_HTTP_SHUTDOWN_DELAY", "0s")
        .env("KEDA_HTTP_DRAIN_TIMEOUT", "1s")
        .env("OTEL_PROM_EXPORTER_ENABLED", "false")
        .env("KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS", "0")
        .env("TOKIO_WORKER_THREADS", "1")
        .env("RUST_LOG", "warn");
    let mut proc = Proc::spawn(
        &format!("interceptor ({name})"),
        cmd,
        Some(&dir.join(format!("{name}-interceptor.log"))),
    )?;
    wait_status(
        &mut proc,
        admin,
        "localhost",
        "/readyz",
        200,
        Duration::from_secs(60),
    )?;
    Ok(Ours { proc, proxy, admin })
}

fn bench_routes(backend: SocketAddr) -> (Vec<serde_json::Value>, serde_json::Value) {
    let routes = vec![
        routes::route(ROUTE, ROUTE, 8080, json!([{"hosts": [HOST]}])),
        routes::route(
            COLD_ROUTE,
            COLD_ROUTE,
            8080,
            json!([{"hosts": [COLD_HOST]}]),
        ),
    ];
    let endpoints = routes::endpoints_file([(ROUTE, 8080)], &[backend]);
    (routes, endpoints)
}

/// One peer of the side-by-side runs.
struct Peer {
    name: &'static str,
    addr: SocketAddr,
    /// The proxy process whose CPU is measured (none for direct).
    pid: Option<u32>,
}

fn run(settings: &Settings) -> anyhow::Result<Report> {
    let started = utc_now();
    let machine = Machine::describe();
    let cores = Cores::split(machine.cpus);
    let tps = procfs::ticks_per_second();
    eprintln!(
        "keda-http benches: {} CPUs ({}), load {:?}; settings {:?}",
        machine.cpus, machine.cpu_model, machine.load_at_start, settings
    );
    let mut sections = Vec::new();
    let mut goals = Goals::default();

    if which("taskset").is_none() {
        eprintln!("taskset not found: processes are not pinned");
    }
    let tmp = TempDir::new()?;
    let (interceptor_bin, hello_bin) = binaries(settings)?;
    let (mut backend, backend_addr) = start_backend(&hello_bin, cores, &tmp.0)?;
    let (routes, endpoints) = bench_routes(backend_addr);
    let mut ours = start_ours(&interceptor_bin, cores, &tmp.0, "main", &routes, &endpoints)?;
    wait_status(
        &mut ours.proc,
        ours.proxy,
        HOST,
        "/",
        200,
        Duration::from_secs(20),
    )
    .context("our interceptor does not forward to the backend")?;

    let nginx_dir = tmp.0.join("nginx");
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut nginx_proc = nginx::start(
        &nginx_dir,
        nginx_addr,
        backend_addr,
        settings.connections,
        Some(cores.proxy),
    )?;
    let mut skipped_peers = Vec::new();
    match nginx_proc.as_mut() {
        Some(p) => wait_status(p, nginx_addr, HOST, "/", 200, Duration::from_secs(20))?,
        None => {
            let line =
                "skipped peer nginx: `nginx` is not installed (`make bench` installs nginx-light)";
            eprintln!("{line}");
            skipped_peers.push(line.to_owned());
        }
    }
    let mut peers = vec![
        Peer {
            name: "direct",
            addr: backend_addr,
            pid: None,
        },
        Peer {
            name: "keda-http",
            addr: ours.proxy,
            pid: Some(ours.proc.pid()),
        },
    ];
    if let Some(p) = &nginx_proc {
        peers.push(Peer {
            name: "nginx",
            addr: nginx_addr,
            pid: Some(p.pid()),
        });
    }

    // 1. Throughput and CPU.
    let mut nginx_max_rps = None;
    let mut ours_max_rps = None;
    if settings.wants("throughput") {
        if which("wrk").is_none() {
            let why = "`wrk` is not installed (`make bench` installs it)";
            eprintln!("skipped: throughput: {why}");
            sections.push(Section::skipped("Throughput and proxy CPU (wrk)", why));
        } else {
            let (section, by_peer) =
                throughput(settings, cores, tps, &peers, backend.pid(), &skipped_peers)?;
            nginx_max_rps = by_peer.get("nginx").map(|t| t.rps.median);
            ours_max_rps = by_peer.get("keda-http").map(|t| t.rps.median);
            goals.cpu_ratio = section.data["ratios"]["cpu_per_request_ours_over_nginx"].as_f64();
            sections.push(section);
        }
        backend.check_alive()?;
        ours.proc.check_alive()?;
    }

    // 2. Latency at half load.
    if settings.wants("latency") {
        let base = nginx_max_rps.or(ours_max_rps);
        let rate = std::env::var("BENCH_RATE")
            .ok()
            .and_then(|r| r.parse::<f64>().ok())
            .or(base.map(|r| r / 2.0));
        match rate {
            Some(rate) => {
                let title = format!(
                    "Latency at half load (open loop, {rate:.0}/s = half of {}'s max)",
                    if nginx_max_rps.is_some() {
                        "nginx"
                    } else {
                        "our"
                    }
                );
                let section = latency(settings, cores, &peers, rate, &title)?;
                goals.added_p99_us = section.data["added_p99_us"]["keda-http"].as_f64();
                goals.latency_overloaded = section.data["overloaded"]["keda-http"]
                    .as_bool()
                    .unwrap_or(false);
                sections.push(section);
            }
            None => sections.push(Section::skipped(
                "Latency at half load (open loop)",
                "no max rate measured (throughput suite skipped); set BENCH_RATE",
            )),
        }
        // A fixed, modest rate as well: on a shared box half of nginx's max can leave no
        // headroom for the (costlier than wrk) open-loop generator and the other tenants.
        let low = env_u64("BENCH_LOW_RATE", 5_000) as f64;
        if low > 0.0 {
            let title = format!("Latency at a fixed {low:.0}/s (open loop)");
            let section = latency(settings, cores, &peers, low, &title)?;
            goals.added_p99_low_us = section.data["added_p99_us"]["keda-http"].as_f64();
            goals.low_rate = low;
            sections.push(section);
        }
    }

    // 3. Activation.
    if settings.wants("activation") {
        let section = match activation(settings, &ours) {
            Ok(s) => s,
            Err(e) => Section::skipped("Activation latency", &format!("failed: {e:#}")),
        };
        goals.activation_us = section.data["p50_us"].as_f64();
        sections.push(section);
    }

    // 4. Cold start: does the interceptor hold a request for a target without endpoints?
    let holds = holds_requests(ours.proxy);
    if settings.wants("coldstart") {
        let section = match cold_start(settings, cores) {
            Ok(s) => s,
            Err(e) => Section::skipped("Cold start: wake latency", &format!("failed: {e:#}")),
        };
        goals.wake_p99_us = section.data["worst_p99_us"].as_f64();
        goals.wake_detail = section.data["levels"].as_array().map(|levels| {
            levels
                .iter()
                .map(|l| {
                    format!(
                        "{} held: {}",
                        l["held"],
                        report::latency(l["latency"]["p99_us"].as_f64())
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
        sections.push(section);
    }

    // 5. Memory.
    if settings.wants("memory") {
        let section = memory(
            settings,
            cores,
            &interceptor_bin,
            &tmp.0,
            backend_addr,
            &ours,
            nginx_proc.as_ref().map(Proc::pid),
            backend.pid(),
            &holds,
            &mut goals,
        )?;
        sections.push(section);
    }

    // Micro numbers from criterion (the `micro` bench target, run before this one).
    let micro = micro_section(&mut goals);
    sections.insert(0, goals.section());
    sections.push(micro);

    drop(nginx_proc);
    drop(ours);
    drop(backend);
    Ok(Report {
        started,
        machine,
        load_at_end: procfs::loadavg(),
        settings: serde_json::to_value(settings)?,
        sections,
    })
}

/// Results of one peer over the repeats.
#[derive(Debug, Clone, serde::Serialize)]
struct PeerThroughput {
    rps: Spread,
    p50_us: Spread,
    p99_us: Spread,
    cpu_us_per_request: Option<Spread>,
    proxy_core_share: Option<Spread>,
    backend_cpu_us_per_request: Option<Spread>,
    errors: u64,
    runs: Vec<serde_json::Value>,
}

fn throughput(
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
    // Per repeat, ours/nginx CPU per request (paired within the repeat).
    let mut paired_cpu_ratio = Vec::new();
    let mut paired_rps_ratio = Vec::new();
    let mut paired_direct_ratio = Vec::new();
    for rep in 0..settings.repeats {
        let mut this_rep: BTreeMap<&'static str, (WrkResult, Option<f64>)> = BTreeMap::new();
        // Rotate the order so that no peer always runs first (or right after another).
        for k in 0..peers.len() {
            let peer = &peers[(k + rep) % peers.len()];
            let run = |duration| WrkRun {
                addr: peer.addr,
                host: HOST.into(),
                path: "/".into(),
                connections: settings.connections,
                duration,
                cpu: Some(cores.load),
            };
            if !settings.warmup.is_zero() {
                run(settings.warmup).run()?;
            }
            let before = peer.pid.and_then(procfs::cpu_ticks);
            let backend_before = procfs::cpu_ticks(backend_pid);
            let load_before = procfs::loadavg();
            let t = Instant::now();
            let result = run(settings.seconds).run()?;
            let wall = t.elapsed().as_secs_f64();
            let after = peer.pid.and_then(procfs::cpu_ticks);
            let backend_after = procfs::cpu_ticks(backend_pid);
            let ticks = before.zip(after).map(|(b, a)| a.saturating_sub(b));
            let cpu = ticks.and_then(|t| stats::cpu_us_per_request(t, tps, result.requests));
            let share = ticks.and_then(|t| stats::core_share(t, tps, wall));
            let backend_cpu = backend_before
                .zip(backend_after)
                .and_then(|(b, a)| stats::cpu_us_per_request(a - b, tps, result.requests));
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
        if let (Some((_, Some(o))), Some((_, Some(n)))) =
            (this_rep.get("keda-http"), this_rep.get("nginx"))
        {
            paired_cpu_ratio.extend(stats::ratio(*o, *n));
        }
        if let (Some((o, _)), Some((n, _))) = (this_rep.get("keda-http"), this_rep.get("nginx")) {
            paired_rps_ratio.extend(stats::ratio(o.rps, n.rps));
        }
        if let (Some((o, _)), Some((d, _))) = (this_rep.get("keda-http"), this_rep.get("direct")) {
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
        "ours/nginx: CPU per request {} (goal ≤ {GOAL_CPU_RATIO}×: {}), rps {}; ours/direct rps {} \
         (medians of per-repeat ratios)",
        report::times(cpu_ratio),
        report::verdict(cpu_ratio, GOAL_CPU_RATIO, true),
        report::times(rps_ratio),
        report::times(direct_ratio),
    ));
    section.notes.extend(skipped_peers.iter().cloned());
    section.data = json!({
        "peers": by_peer,
        "ratios": {
            "cpu_per_request_ours_over_nginx": cpu_ratio,
            "rps_ours_over_nginx": rps_ratio,
            "rps_ours_over_direct": direct_ratio,
            "per_repeat_cpu_ours_over_nginx": paired_cpu_ratio,
        },
    });
    Ok((section, by_peer))
}

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

fn latency(
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
    let ours_added = added_p99
        .get("keda-http")
        .and_then(serde_json::Value::as_f64);
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
        "goal: our added p99 ≤ {GOAL_ADDED_P99_US:.0} µs: {}",
        if is_overloaded("keda-http") {
            "not judged (overloaded)".to_owned()
        } else {
            report::verdict(ours_added, GOAL_ADDED_P99_US, true)
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
        "runs": runs,
    });
    Ok(section)
}

/// Whether a request for a target without ready endpoints is held (`Ok`) or answered at once
/// (`Err` with what came back).
fn holds_requests(proxy: SocketAddr) -> Result<(), String> {
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

fn cold_start(settings: &Settings, cores: Cores) -> anyhow::Result<Section> {
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

fn activation(settings: &Settings, ours: &Ours) -> anyhow::Result<Section> {
    use keda_http_scaler::proto::ScaledObjectRef;
    use keda_http_scaler::proto::external_scaler_client::ExternalScalerClient;
    use keda_http_scaler::targets::{RouteScaling, StaticTargets};
    use keda_http_scaler::{Scaler, Settings as ScalerSettings, discovery, metrics::Metrics};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let admin = ours.admin;
    let proxy = ours.proxy;
    let n = settings.activations;
    rt.block_on(async move {
        let targets = Arc::new(StaticTargets::new());
        targets.set_route(
            routes::NAMESPACE,
            ROUTE,
            RouteScaling {
                concurrency: Some(100.0),
                rate: None,
            },
        );
        let (_discovery_tx, discovery_rx) = discovery::fixed([admin]);
        let mut registry = prometheus_client::registry::Registry::default();
        let scaler = Scaler::new(
            ScalerSettings::default(),
            discovery_rx,
            targets,
            Metrics::register(&mut registry),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(scaler.serve(listener, async move {
            let _ = stop_rx.await;
        }));
        let result = async {
            let mut client = ExternalScalerClient::connect(format!("http://{grpc}")).await?;
            let sor = ScaledObjectRef {
                name: ROUTE.into(),
                namespace: routes::NAMESPACE.into(),
                scaler_metadata: [("interceptorRoute".to_owned(), ROUTE.to_owned())]
                    .into_iter()
                    .collect(),
            };
            let mut stream = client.stream_is_active(sor).await?.into_inner();
            let mut samples = Samples::new();
            let http =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<bytes::Bytes>>();
            for _ in 0..n {
                // Wait until the stream reports idle.
                loop {
                    let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
                        .await
                        .context("StreamIsActive went silent")??
                        .context("StreamIsActive ended")?;
                    if !msg.result {
                        break;
                    }
                }
                let t0 = Instant::now();
                let request = http::Request::get(format!("http://{proxy}/?delay_ms=50"))
                    .header(http::header::HOST, HOST)
                    .body(http_body_util::Empty::new())?;
                let call = tokio::spawn(http.request(request));
                loop {
                    let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
                        .await
                        .context("no activation within 10 s")??
                        .context("StreamIsActive ended")?;
                    if msg.result {
                        samples.push(t0.elapsed().as_micros() as u64);
                        break;
                    }
                }
                let _ = call.await;
            }
            anyhow::Ok(samples)
        }
        .await;
        let _ = stop_tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        let mut samples = result?;
        let summary = samples.summary().context("no activation sample")?;
        let mut section = Section::new("Activation latency");
        section.table = Table::new(&["samples", "p50", "p90", "p99", "max"]);
        section.table.row(vec![
            summary.count.to_string(),
            report::latency(Some(summary.p50_us as f64)),
            report::latency(Some(summary.p90_us as f64)),
            report::latency(Some(summary.p99_us as f64)),
            report::latency(Some(summary.max_us as f64)),
        ]);
        section.notes.push(
            "first request at an idle route (our interceptor, release binary) → an in-process \
             keda-http-scaler (default settings, push over /queue/watch) sends `true` on an open \
             StreamIsActive"
                .to_owned(),
        );
        section.notes.push(format!(
            "goal ≤ {:.0} ms (p50): {}; p99: {}",
            GOAL_ACTIVATION_US / 1000.0,
            report::verdict(Some(summary.p50_us as f64), GOAL_ACTIVATION_US, true),
            report::verdict(Some(summary.p99_us as f64), GOAL_ACTIVATION_US, true),
        ));
        section.data = json!({
            "p50_us": summary.p50_us,
            "p99_us": summary.p99_us,
            "summary": summary,
        });
        Ok(section)
    })
}

/// RSS after a short settle.
fn settled_rss(pid: u32) -> Option<u64> {
    std::thread::sleep(Duration::from_millis(500));
    procfs::rss_kib(pid)
}

#[allow(clippy::too_many_arguments)]
fn memory(
    settings: &Settings,
    cores: Cores,
    bin: &Path,
    dir: &Path,
    backend: SocketAddr,
    ours: &Ours,
    nginx_pid: Option<u32>,
    backend_pid: u32,
    holds: &Result<(), String>,
    goals: &mut Goals,
) -> anyhow::Result<Section> {
    let mut table = Table::new(&["what", "RSS", "note"]);
    let mut notes = Vec::new();
    let mut data = serde_json::Map::new();

    // Idle: a fresh interceptor with the two bench routes, after one request.
    let (routes, endpoints) = bench_routes(backend);
    let mut idle = start_ours(bin, cores, dir, "idle", &routes, &endpoints)?;
    wait_status(
        &mut idle.proc,
        idle.proxy,
        HOST,
        "/",
        200,
        Duration::from_secs(20),
    )?;
    let idle_kib = settled_rss(idle.proc.pid());
    goals.idle_rss_kib = idle_kib;
    table.row(vec![
        "keda-http idle (2 routes, after 1 request)".into(),
        report::mib(idle_kib),
        format!(
            "goal ≤ 16 MiB: {}",
            report::verdict(idle_kib.map(|k| k as f64), GOAL_IDLE_RSS_KIB as f64, true)
        ),
    ]);
    data.insert("idle_kib".into(), json!(idle_kib));

    // Many routes: every route its own Service with one ready endpoint.
    if settings.routes > 0 {
        let many = routes::synthetic(settings.routes);
        let names: Vec<String> = (0..settings.routes).map(routes::name).collect();
        let endpoints =
            routes::endpoints_file(names.iter().map(|n| (n.as_str(), 8080)), &[backend]);
        let t = Instant::now();
        let big = start_ours(bin, cores, dir, "routes", &many, &endpoints)?;
        let ready_s = t.elapsed().as_secs_f64();
        let kib = settled_rss(big.proc.pid());
        drop(big);
        let per_route = kib
            .zip(idle_kib)
            .map(|(k, i)| (k.saturating_sub(i) * 1024) as f64 / settings.routes as f64);
        table.row(vec![
            format!("keda-http with {} routes", settings.routes),
            report::mib(kib),
            format!(
                "{} bytes per route over idle; ready {:.0} ms after start",
                report::num(per_route, 0),
                ready_s * 1000.0
            ),
        ]);
        data.insert("routes".into(), json!({"count": settings.routes, "kib": kib, "bytes_per_route": per_route, "ready_seconds": ready_s}));
    }

    // Held requests, on the idle instance.
    match holds {
        Ok(()) => {
            match held_memory(settings, &idle) {
                Ok(rss) => {
                    let n = settings.held as f64;
                    let per_conn = (rss.connections.saturating_sub(rss.before) * 1024) as f64 / n;
                    let per_held = (rss.held.saturating_sub(rss.before) * 1024) as f64 / n;
                    goals.held_bytes = Some(per_held);
                    table.row(vec![
                        format!("keda-http with {} idle client connections", settings.held),
                        report::mib(Some(rss.connections)),
                        format!("{per_conn:.0} bytes per connection"),
                    ]);
                    table.row(vec![
                    format!("keda-http holding {} requests (one per connection)", settings.held),
                    report::mib(Some(rss.held)),
                    format!(
                        "{per_held:.0} bytes per held request incl. its connection, {:.0} for the \
                         request alone (goal ≤ 2 KiB: {})",
                        per_held - per_conn,
                        report::verdict(Some(per_held), GOAL_HELD_BYTES, true)
                    ),
                ]);
                    data.insert(
                    "held".into(),
                    json!({"count": settings.held, "rss_kib": rss, "bytes_per_connection": per_conn, "bytes_per_held_request": per_held}),
                );
                }
                Err(e) => notes.push(format!("held requests: failed: {e:#}")),
            }
        }
        Err(why) => notes.push(format!(
            "held requests: skipped: needs cold start (issue 6): {why}"
        )),
    }
    drop(idle);

    // Soak: the main interceptor under wrk load, RSS sampled.
    if !settings.soak.is_zero() && which("wrk").is_none() {
        notes.push("soak: skipped: `wrk` is not installed (`make bench` installs it)".to_owned());
    }
    if !settings.soak.is_zero() && which("wrk").is_some() {
        let pid = ours.proc.pid();
        let start_kib = procfs::rss_kib(pid);
        let soak = settings.soak;
        let sampler = std::thread::spawn(move || {
            let mut points = Vec::new();
            let t = Instant::now();
            loop {
                points.push((t.elapsed().as_secs_f64(), procfs::rss_kib(pid)));
                if t.elapsed() + Duration::from_secs(5) > soak {
                    break;
                }
                std::thread::sleep(Duration::from_secs(5));
            }
            points
        });
        let result = WrkRun {
            addr: ours.proxy,
            host: HOST.into(),
            path: "/".into(),
            connections: settings.connections,
            duration: settings.soak,
            cpu: Some(cores.load),
        }
        .run()?;
        let points = sampler.join().unwrap_or_default();
        let end_kib = settled_rss(pid);
        let kibs: Vec<u64> = points.iter().filter_map(|(_, k)| *k).collect();
        let max_kib = kibs.iter().copied().max();
        // Flatness: the second half against the first half of the samples.
        let half = kibs.len() / 2;
        let first_half = kibs.get(..half).and_then(|s| s.iter().copied().max());
        let second_half = kibs.get(half..).and_then(|s| s.iter().copied().max());
        let growth = first_half
            .zip(second_half)
            .and_then(|(a, b)| stats::growth(a as f64, b as f64));
        table.row(vec![
            format!(
                "keda-http after {:.0} s of load ({:.0} requests)",
                settings.soak.as_secs_f64(),
                result.requests as f64
            ),
            report::mib(end_kib),
            format!(
                "before {}, peak {}, second-half peak vs first-half peak {}",
                report::mib(start_kib),
                report::mib(max_kib),
                growth.map_or_else(|| "–".into(), |g| format!("{:+.1}%", g * 100.0))
            ),
        ]);
        data.insert("soak".into(), json!({"seconds": settings.soak.as_secs_f64(), "requests": result.requests, "start_kib": start_kib, "end_kib": end_kib, "max_kib": max_kib, "samples": points, "growth_second_half": growth}));
    }

    // Peers for reference.
    if let Some(pid) = nginx_pid {
        let kib = procfs::rss_kib(pid);
        table.row(vec![
            "nginx (1 process, after the runs)".into(),
            report::mib(kib),
            String::new(),
        ]);
        data.insert("nginx_kib".into(), json!(kib));
    }
    let kib = procfs::rss_kib(backend_pid);
    table.row(vec![
        "hello backend (after the runs)".into(),
        report::mib(kib),
        String::new(),
    ]);

    let mut section = Section::new("Memory (RSS)");
    section.table = table;
    section.notes = notes;
    section.data = serde_json::Value::Object(data);
    Ok(section)
}

/// Opens `settings.held` connections, each sending one request for the cold route, and
/// measures the interceptor's RSS before and after they are all held.
/// RSS of an interceptor: before, with `n` idle connections open, and with a request for the
/// cold route held on each of them (KiB).
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct HeldRss {
    before: u64,
    connections: u64,
    held: u64,
}

/// Opens `settings.held` connections, then sends one request for the cold route on each, and
/// measures the interceptor's RSS at each step.
fn held_memory(settings: &Settings, ours: &Ours) -> anyhow::Result<HeldRss> {
    use tokio::io::AsyncWriteExt as _;
    let pid = ours.proc.pid();
    let before = settled_rss(pid).context("RSS")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let proxy = ours.proxy;
    let admin = ours.admin;
    let n = settings.held;
    rt.block_on(async move {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(tokio::net::TcpStream::connect(proxy).await?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let connections = procfs::rss_kib(pid).context("RSS")?;
        for s in &mut conns {
            s.write_all(format!("GET / HTTP/1.1\r\nHost: {COLD_HOST}\r\n\r\n").as_bytes())
                .await?;
        }
        // Every request counted (held requests are counted while they wait).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let held = queue_concurrency(admin, &format!("{}/{COLD_ROUTE}", routes::NAMESPACE));
            if held.is_some_and(|h| h >= n as i64) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {held:?} of {n} requests held after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = procfs::rss_kib(pid).context("RSS")?;
        drop(conns);
        anyhow::Ok(HeldRss {
            before,
            connections,
            held,
        })
    })
}

/// The in-flight count of route `key` from the interceptor's `/queue` (blocking, short).
fn queue_concurrency(admin: SocketAddr, key: &str) -> Option<i64> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /queue HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    v[key]["Concurrency"].as_i64()
}

/// The goals of the issue and what this run measured against them.
#[derive(Debug, Default)]
struct Goals {
    cpu_ratio: Option<f64>,
    added_p99_us: Option<f64>,
    latency_overloaded: bool,
    added_p99_low_us: Option<f64>,
    low_rate: f64,
    wake_p99_us: Option<f64>,
    wake_detail: Option<String>,
    activation_us: Option<f64>,
    lookup_10k_ns: Option<f64>,
    idle_rss_kib: Option<u64>,
    held_bytes: Option<f64>,
}

impl Goals {
    fn section(&self) -> Section {
        let mut table = Table::new(&["goal", "measured", "verdict"]);
        let low_goal = if self.low_rate > 0.0 {
            format!("added p99 at a fixed {:.0}/s ≤ 0.3 ms", self.low_rate)
        } else {
            "added p99 at a fixed modest rate ≤ 0.3 ms".to_owned()
        };
        let rows: [(&str, String, String); 8] = [
            (
                "proxy CPU per request ≤ 0.9 × nginx's",
                report::times(self.cpu_ratio),
                report::verdict(self.cpu_ratio, GOAL_CPU_RATIO, true),
            ),
            (
                "added p99 at half load ≤ 0.3 ms",
                report::latency(self.added_p99_us),
                if self.latency_overloaded {
                    "not judged: overloaded (see below)".to_owned()
                } else {
                    report::verdict(self.added_p99_us, GOAL_ADDED_P99_US, true)
                },
            ),
            (
                &low_goal,
                report::latency(self.added_p99_low_us),
                report::verdict(self.added_p99_low_us, GOAL_ADDED_P99_US, true),
            ),
            (
                "wake ≤ 2 ms p99 after the endpoint event (worst level)",
                self.wake_detail
                    .clone()
                    .unwrap_or_else(|| report::latency(self.wake_p99_us)),
                report::verdict(self.wake_p99_us, GOAL_WAKE_P99_US, true),
            ),
            (
                "activation ≤ 20 ms (p50)",
                report::latency(self.activation_us),
                report::verdict(self.activation_us, GOAL_ACTIVATION_US, true),
            ),
            (
                "route lookup ≤ 200 ns at 10,000 routes (slowest kind)",
                self.lookup_10k_ns
                    .map_or_else(|| "–".into(), |ns| format!("{ns:.0} ns")),
                report::verdict(self.lookup_10k_ns, GOAL_LOOKUP_NS, true),
            ),
            (
                "RSS ≤ 16 MiB idle",
                report::mib(self.idle_rss_kib),
                report::verdict(
                    self.idle_rss_kib.map(|k| k as f64),
                    GOAL_IDLE_RSS_KIB as f64,
                    true,
                ),
            ),
            (
                "≤ 2 KiB per held request",
                self.held_bytes
                    .map_or_else(|| "–".into(), |b| format!("{b:.0} B")),
                report::verdict(self.held_bytes, GOAL_HELD_BYTES, true),
            ),
        ];
        for (goal, measured, verdict) in rows {
            table.row(vec![goal.to_owned(), measured, verdict]);
        }
        let mut section = Section::new("Goals (issue 11)");
        section.table = table;
        section.notes.push(
            "ratios compare peers within this run; absolute numbers from different runs (or a \
             busy machine) are not comparable; a difference under 10% is noise"
                .to_owned(),
        );
        section
    }
}

fn micro_section(goals: &mut Goals) -> Section {
    /// The criterion groups of `benches/micro.rs` (other crates' benches share the directory).
    const GROUPS: [&str; 4] = [
        "route_lookup/",
        "route_table_rebuild/",
        "counters/",
        "endpoint_pick/",
    ];
    let estimates: Vec<_> = criterion_results::load(&target_dir().join("criterion"))
        .into_iter()
        .filter(|e| GROUPS.iter().any(|g| e.id.starts_with(g)))
        .collect();
    if estimates.is_empty() {
        return Section::skipped(
            "Micro benchmarks (criterion)",
            "no criterion results in target/criterion (run `cargo bench -p keda-http-benches --bench micro`)",
        );
    }
    let mut table = Table::new(&["benchmark", "mean", "median"]);
    let fmt = |ns: f64| {
        if ns >= 1_000_000.0 {
            format!("{:.2} ms", ns / 1e6)
        } else if ns >= 10_000.0 {
            format!("{:.1} µs", ns / 1e3)
        } else {
            format!("{ns:.1} ns")
        }
    };
    let mut worst_lookup_10k: Option<f64> = None;
    for e in &estimates {
        if e.id.starts_with("route_lookup/") && e.id.ends_with("/10000") {
            worst_lookup_10k = Some(worst_lookup_10k.map_or(e.mean_ns, |w| w.max(e.mean_ns)));
        }
        table.row(vec![e.id.clone(), fmt(e.mean_ns), fmt(e.median_ns)]);
    }
    goals.lookup_10k_ns = worst_lookup_10k;
    let mut section =
        Section::new("Micro benchmarks (criterion, latest results in target/criterion)");
    section.table = table;
    section.notes.push(format!(
        "route lookup at 10,000 routes, slowest kind: {} (goal ≤ {GOAL_LOOKUP_NS:.0} ns: {})",
        worst_lookup_10k.map_or_else(|| "–".into(), fmt),
        report::verdict(worst_lookup_10k, GOAL_LOOKUP_NS, true)
    ));
    section.data = serde_json::to_value(&estimates).unwrap_or_default();
    section
}
