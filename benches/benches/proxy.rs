//! Whole-system benchmarks (`cargo bench -p keda-http-benches --bench proxy`), side by side in
//! one run so that ratios are comparable even on a busy machine:
//!
//! 1. throughput and proxy CPU: `wrk` against the backend directly (the ceiling), through our
//!    interceptor (release binary, one Tokio worker), through nginx (one process) and through
//!    a minimal hyper proxy (this binary as a helper process, one Tokio worker);
//! 2. workers: our interceptor unpinned with 2 Tokio workers against 1 (rps ratio);
//! 3. latency at half of nginx's max rate and at a fixed 5,000/s, from an open-loop generator
//!    (a child process of this binary): added p50/p99 over direct;
//! 4. activation: first request at an idle route → `StreamIsActive` says true (an in-process
//!    scaler over the interceptor's `/queue/watch`);
//! 5. cold start: wake latency of 1 / 100 / 1,000 held requests, and the same client opening
//!    1,000 fresh connections straight to the backend as the baseline;
//! 6. memory: RSS idle, per route, per idle keep-alive connection after one response and per
//!    held request (ours, and nginx holding requests on a silent upstream), and over a soak.
//!
//! The proxy is pinned to CPU 0, load generator and backend to CPU 1 (`taskset`). Settings
//! come from the environment (`BENCH_SECONDS`, `BENCH_WARMUP_SECONDS`, `BENCH_REPEATS`,
//! `BENCH_CONNECTIONS`, `BENCH_SOAK_SECONDS`, `BENCH_ACTIVATIONS`, `BENCH_ROUTES`,
//! `BENCH_HELD`, `BENCH_SUITES`, `BENCH_SKIP_BUILD`); the report (the goals table first) is
//! printed and written to `target/bench-results/`.
//!
//! This file holds `main`, the settings and the orchestration (build, start the backend, our
//! interceptor and nginx, run the suites in order); each suite lives in its own module under
//! `proxy/` (`throughput`, `workers`, `latency`, `activation`, `cold_start` with the `wake`
//! helper, `memory`), with the goals table in `goals` and criterion's micro numbers in
//! `micro_section`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use keda_http_benches::openloop::{self, OpenLoop};
use keda_http_benches::process::{Cores, Proc, free_port, pinned, wait_status, which};
use keda_http_benches::procfs::{self, Machine};
use keda_http_benches::report::{Report, Section};
use keda_http_benches::{env_secs, env_u64, nginx, routes, target_dir};
use serde_json::json;

#[path = "proxy/activation.rs"]
mod activation;
#[path = "proxy/cold_start.rs"]
mod cold_start;
#[path = "proxy/goals.rs"]
mod goals;
#[path = "proxy/latency.rs"]
mod latency;
#[path = "proxy/memory.rs"]
mod memory;
#[path = "proxy/micro_section.rs"]
mod micro_section;
#[path = "proxy/throughput.rs"]
mod throughput;
#[path = "proxy/wake.rs"]
mod wake;
#[path = "proxy/workers.rs"]
mod workers;

use activation::activation;
use cold_start::{cold_start, holds_requests};
use goals::Goals;
use latency::latency;
use memory::memory;
use micro_section::micro_section;
use throughput::throughput;
use workers::workers;

/// Environment variable that turns this binary into a helper process.
const ROLE: &str = "KEDA_BENCH_ROLE";
/// The open-loop helper's configuration (JSON).
const OPENLOOP_CONFIG: &str = "KEDA_BENCH_OPENLOOP";
/// The wake helper's configuration (JSON).
const WAKE_CONFIG: &str = "KEDA_BENCH_WAKE";
/// The minimal proxy helper's configuration (JSON).
const MINIMAL_CONFIG: &str = "KEDA_BENCH_MINIMAL";
/// The silent upstream helper's listen address.
const SILENT_LISTEN: &str = "KEDA_BENCH_SILENT";

/// Peer names in the report.
const OURS: &str = "keda-http";
const NGINX: &str = "nginx";
const MINIMAL: &str = "minimal-hyper";

/// The route every load suite uses.
const HOST: &str = "bench.example.com";
const ROUTE: &str = "hello";
/// A route whose target never has endpoints (cold-start probes).
const COLD_HOST: &str = "cold.example.com";
const COLD_ROUTE: &str = "cold";

/// Goals of issue 19 (judged, never asserted).
/// Proxy CPU per request, ours ÷ nginx's in the same run.
const GOAL_CPU_VS_NGINX: f64 = 1.0;
/// Proxy CPU per request, ours ÷ the minimal hyper proxy's in the same run.
const GOAL_CPU_VS_MINIMAL: f64 = 0.9;
/// Added p99 at the fixed rate, ours ÷ nginx's.
const GOAL_ADDED_P99_VS_NGINX: f64 = 1.0;
/// RSS per held cold-start request (and below nginx's per held request).
const GOAL_HELD_BYTES: f64 = 8.0 * 1024.0;
/// RSS per idle keep-alive client connection after one response.
const GOAL_CONN_BYTES: f64 = 4.0 * 1024.0;
/// RSS per route at 10,000 routes.
const GOAL_ROUTE_BYTES: f64 = 2.0 * 1024.0;
/// Wake of 1,000 held requests ÷ the direct baseline.
const GOAL_WAKE_VS_DIRECT: f64 = 1.5;
/// Activation p50.
const GOAL_ACTIVATION_US: f64 = 1_000.0;
/// Route lookup at 10,000 routes, slowest kind.
const GOAL_LOOKUP_NS: f64 = 150.0;
/// rps with 2 Tokio workers ÷ with 1.
const GOAL_WORKERS_RATIO: f64 = 1.8;
/// Why a peer is missing.
const NGINX_MISSING: &str = "`nginx` is not installed (`make bench` installs nginx-light)";
const WRK_MISSING: &str = "`wrk` is not installed (`make bench` installs it)";
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
            "minimal-proxy" => minimal_proxy_role(),
            "silent" => silent_role(),
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

/// The minimal proxy helper's configuration.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct MinimalConfig {
    listen: SocketAddr,
    routes: keda_http_benches::minimal_proxy::Routes,
}

/// The helper process: the minimal hyper proxy (Tokio multi-thread runtime, so
/// `TOKIO_WORKER_THREADS` sets its workers as it does ours) until killed.
fn minimal_proxy_role() -> anyhow::Result<()> {
    let config: MinimalConfig = serde_json::from_str(
        &std::env::var(MINIMAL_CONFIG).context("the minimal proxy configuration")?,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        keda_http_benches::minimal_proxy::serve(listener, config.routes).await?;
        anyhow::Ok(())
    })
}

/// The helper process: an upstream that accepts connections and never reads or answers,
/// until killed (nginx's held requests wait on it).
fn silent_role() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::var(SILENT_LISTEN)
        .context("the silent upstream's address")?
        .parse()?;
    // A long accept queue: nginx opens thousands of upstream connections at once.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(listen)?;
        let listener = socket.listen(8192)?;
        let mut held = Vec::new();
        loop {
            let (stream, _) = listener.accept().await?;
            held.push(stream);
        }
    })
}

/// Starts the minimal hyper proxy (this binary as a helper) on the proxy core, routing the
/// bench host to `backend`.
fn start_minimal(
    cores: Cores,
    backend: SocketAddr,
    dir: &Path,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let config = MinimalConfig {
        listen,
        routes: [(HOST.to_owned(), backend)].into_iter().collect(),
    };
    let mut cmd = pinned(std::env::current_exe()?, Some(cores.proxy));
    cmd.env(ROLE, "minimal-proxy")
        .env(MINIMAL_CONFIG, serde_json::to_string(&config)?)
        .env("TOKIO_WORKER_THREADS", "1");
    let mut proc = Proc::spawn("minimal hyper proxy", cmd, Some(&dir.join("minimal.log")))?;
    wait_status(&mut proc, listen, HOST, "/", 200, Duration::from_secs(20))?;
    Ok((proc, listen))
}

/// Starts the silent upstream (this binary as a helper) on the load core.
fn start_silent(cores: Cores, dir: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut cmd = pinned(std::env::current_exe()?, Some(cores.load));
    cmd.env(ROLE, "silent")
        .env(SILENT_LISTEN, listen.to_string());
    let mut proc = Proc::spawn("silent upstream", cmd, Some(&dir.join("silent.log")))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
        proc.check_alive()?;
        if std::time::Instant::now() > deadline {
            bail!("the silent upstream does not accept on {listen}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((proc, listen))
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
            .unwrap_or_else(|_| "throughput,workers,latency,activation,coldstart,memory".into())
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

/// Utc now as RFC 3339, to the second.
fn utc_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
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

/// Starts our interceptor on the proxy core, one Tokio worker, with routes and endpoints from
/// files.
fn start_ours(
    bin: &Path,
    cores: Cores,
    dir: &Path,
    name: &str,
    routes: &[serde_json::Value],
    endpoints: &serde_json::Value,
) -> anyhow::Result<Ours> {
    start_ours_with(bin, Some(cores.proxy), 1, dir, name, routes, endpoints)
}

/// Starts our interceptor on `cpu` (any when `None`) with `workers` Tokio workers.
fn start_ours_with(
    bin: &Path,
    cpu: Option<usize>,
    workers: usize,
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
    let mut cmd = pinned(bin, cpu);
    cmd.env("KEDA_HTTP_PROXY_PORT", proxy.port().to_string())
        .env("KEDA_HTTP_ADMIN_PORT", admin.port().to_string())
        .env("KEDA_HTTP_BIND_ADDRESS", "127.0.0.1")
        .env("KEDA_HTTP_ROUTES_FILE", &routes_file)
        .env("KEDA_HTTP_ENDPOINTS_FILE", &endpoints_file)
        .env("KEDA_HTTP_SHUTDOWN_DELAY", "0s")
        .env("KEDA_HTTP_DRAIN_TIMEOUT", "1s")
        .env("OTEL_PROM_EXPORTER_ENABLED", "false")
        .env("KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS", "0")
        .env("TOKIO_WORKER_THREADS", workers.to_string())
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
    let tmp = tempfile::Builder::new()
        .prefix("keda-http-bench-")
        .tempdir()?;
    let (interceptor_bin, hello_bin) = binaries(settings)?;
    let (mut backend, backend_addr) = start_backend(&hello_bin, cores, tmp.path())?;
    let (routes, endpoints) = bench_routes(backend_addr);
    let mut ours = start_ours(
        &interceptor_bin,
        cores,
        tmp.path(),
        "main",
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
    )
    .context("our interceptor does not forward to the backend")?;

    let nginx_dir = tmp.path().join("nginx");
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
            goals.no_nginx = Some(NGINX_MISSING.to_owned());
        }
    }
    let (minimal_proc, minimal_addr) = match start_minimal(cores, backend_addr, tmp.path()) {
        Ok((p, a)) => (Some(p), Some(a)),
        Err(e) => {
            let line = format!("skipped peer {MINIMAL}: {e:#}");
            eprintln!("{line}");
            skipped_peers.push(line.clone());
            goals.no_minimal = Some(line);
            (None, None)
        }
    };
    let mut peers = vec![
        Peer {
            name: "direct",
            addr: backend_addr,
            pid: None,
        },
        Peer {
            name: OURS,
            addr: ours.proxy,
            pid: Some(ours.proc.pid()),
        },
    ];
    if let Some(p) = &nginx_proc {
        peers.push(Peer {
            name: NGINX,
            addr: nginx_addr,
            pid: Some(p.pid()),
        });
    }
    if let (Some(p), Some(addr)) = (&minimal_proc, minimal_addr) {
        peers.push(Peer {
            name: MINIMAL,
            addr,
            pid: Some(p.pid()),
        });
    }

    // 1. Throughput and CPU.
    let mut nginx_max_rps = None;
    let mut ours_max_rps = None;
    let wrk_missing = which("wrk").is_none().then_some(WRK_MISSING);
    if settings.wants("throughput") {
        if let Some(why) = wrk_missing {
            eprintln!("skipped: throughput: {why}");
            sections.push(Section::skipped("Throughput and proxy CPU (wrk)", why));
            goals.why("throughput", why);
        } else {
            let (section, by_peer) =
                throughput(settings, cores, tps, &peers, backend.pid(), &skipped_peers)?;
            nginx_max_rps = by_peer.get(NGINX).map(|t| t.rps.median);
            ours_max_rps = by_peer.get(OURS).map(|t| t.rps.median);
            for (name, t) in &by_peer {
                if let Some(cpu) = &t.cpu_us_per_request {
                    goals.cpu_us.insert(name, cpu.median);
                }
            }
            let ratios = &section.data["ratios"];
            goals.cpu_ratio_nginx = ratios["cpu_per_request_ours_over_nginx"].as_f64();
            goals.cpu_ratio_minimal = ratios["cpu_per_request_ours_over_minimal"].as_f64();
            sections.push(section);
        }
        backend.check_alive()?;
        ours.proc.check_alive()?;
    }
    drop(minimal_proc);

    // 2. Workers: 2 against 1, unpinned.
    if settings.wants("workers") {
        if let Some(why) = wrk_missing {
            sections.push(Section::skipped(
                "Throughput with 2 Tokio workers vs 1",
                why,
            ));
            goals.why("workers", why);
        } else {
            let section = match workers(settings, cores, &interceptor_bin, tmp.path(), backend_addr)
            {
                Ok(s) => s,
                Err(e) => {
                    goals.why("workers", &format!("failed: {e:#}"));
                    Section::skipped(
                        "Throughput with 2 Tokio workers vs 1",
                        &format!("failed: {e:#}"),
                    )
                }
            };
            goals.rps_1_worker = section.data["rps"]["1"].as_f64();
            goals.rps_2_workers = section.data["rps"]["2"].as_f64();
            goals.workers_ratio = section.data["ratio"].as_f64();
            sections.push(section);
        }
    }

    // 3. Latency at half load and at a fixed rate (the minimal proxy is a CPU peer only).
    let latency_peers: Vec<Peer> = peers
        .iter()
        .filter(|p| p.name != MINIMAL)
        .map(|p| Peer {
            name: p.name,
            addr: p.addr,
            pid: p.pid,
        })
        .collect();
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
                sections.push(latency(settings, cores, &latency_peers, rate, &title)?);
            }
            None => sections.push(Section::skipped(
                "Latency at half load (open loop)",
                "no max rate measured (throughput suite skipped); set BENCH_RATE",
            )),
        }
        // A fixed, modest rate as well: on a shared box half of nginx's max can leave no
        // headroom for the (costlier than wrk) open-loop generator and the other tenants.
        let low = env_u64("BENCH_LOW_RATE", 5_000) as f64;
        goals.low_rate = low;
        if low > 0.0 {
            let title = format!("Latency at a fixed {low:.0}/s (open loop)");
            let section = latency(settings, cores, &latency_peers, low, &title)?;
            goals.added_p99_ours = section.data["added_p99_us"][OURS].as_f64();
            goals.added_p99_nginx = section.data["added_p99_us"][NGINX].as_f64();
            if section.data["overloaded"][OURS].as_bool() == Some(true) {
                goals.why("latency", "overloaded (see the latency section)");
                goals.added_p99_ours = None;
            }
            sections.push(section);
        } else {
            goals.why("latency", "BENCH_LOW_RATE=0");
        }
    }

    // 4. Activation.
    if settings.wants("activation") {
        let section = match activation(settings, &ours) {
            Ok(s) => s,
            Err(e) => {
                goals.why("activation", &format!("failed: {e:#}"));
                Section::skipped("Activation latency", &format!("failed: {e:#}"))
            }
        };
        goals.activation_us = section.data["p50_us"].as_f64();
        sections.push(section);
    }

    // 5. Cold start: does the interceptor hold a request for a target without endpoints?
    let holds = holds_requests(ours.proxy);
    if settings.wants("coldstart") {
        let section = match cold_start(settings, cores) {
            Ok(s) => s,
            Err(e) => {
                goals.why("coldstart", &format!("failed: {e:#}"));
                Section::skipped("Cold start: wake latency", &format!("failed: {e:#}"))
            }
        };
        if let Some(why) = section
            .notes
            .iter()
            .find_map(|n| n.strip_prefix("skipped: "))
        {
            goals.why("coldstart", why);
        }
        goals.wake_all_us = section.data["all_arrived_us"]["held"].as_f64();
        goals.wake_direct_us = section.data["all_arrived_us"]["direct"].as_f64();
        sections.push(section);
    }

    // 6. Memory.
    if settings.wants("memory") {
        let section = memory(
            settings,
            cores,
            &interceptor_bin,
            tmp.path(),
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
    sections.insert(0, goals.section(settings));
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
