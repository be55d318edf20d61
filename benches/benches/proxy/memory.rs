//! Suite 5: memory. RSS idle, with many routes, with held requests, and over a soak under load.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keda_http_benches::process::{Cores, wait_status, which};
use keda_http_benches::procfs;
use keda_http_benches::report::{self, Section, Table};
use keda_http_benches::routes;
use keda_http_benches::stats;
use keda_http_benches::wrk::WrkRun;
use serde_json::json;

use super::{
    COLD_HOST, COLD_ROUTE, GOAL_HELD_BYTES, GOAL_IDLE_RSS_KIB, Goals, HOST, Ours, Settings,
    bench_routes, start_ours,
};

/// RSS after a short settle.
fn settled_rss(pid: u32) -> Option<u64> {
    std::thread::sleep(Duration::from_millis(500));
    procfs::rss_kib(pid)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn memory(
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
