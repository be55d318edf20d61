//! Suite 6: memory. RSS idle, per route, per idle keep-alive client connection after one
//! response, per held request (ours for a target without endpoints; nginx on an upstream that
//! never answers), and over a soak under load. Every per-connection or per-request figure is
//! the RSS difference of a fresh process divided by the count (nginx: master + its one
//! worker).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keda_http_benches::nginx;
use keda_http_benches::process::{Cores, Proc, free_port, wait_status, which};
use keda_http_benches::procfs;
use keda_http_benches::report::{self, Section, Table};
use keda_http_benches::routes;
use keda_http_benches::stats;
use keda_http_benches::wrk::WrkRun;
use serde_json::json;

use super::{
    COLD_HOST, COLD_ROUTE, GOAL_CONN_BYTES, GOAL_HELD_BYTES, GOAL_ROUTE_BYTES, Goals, HOST,
    NGINX_MISSING, Ours, Settings, bench_routes, start_ours, start_silent,
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
    table.row(vec![
        "keda-http idle (2 routes, after 1 request)".into(),
        report::mib(idle_kib),
        String::new(),
    ]);
    data.insert("idle_kib".into(), json!(idle_kib));

    // Many routes: every route its own Service with one ready endpoint.
    goals.routes = settings.routes;
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
        goals.route_bytes = per_route;
        table.row(vec![
            format!("keda-http with {} routes", settings.routes),
            report::mib(kib),
            format!(
                "{} bytes per route over idle (goal ≤ 2 KiB: {}); ready {:.0} ms after start",
                report::num(per_route, 0),
                report::verdict(per_route, GOAL_ROUTE_BYTES, true),
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
                    goals.held_bytes_ours = Some(per_held);
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
                         request alone (goal ≤ 8 KiB: {})",
                        per_held - per_conn,
                        report::verdict(Some(per_held), GOAL_HELD_BYTES, true)
                    ),
                ]);
                    data.insert(
                    "held".into(),
                    json!({"count": settings.held, "rss_kib": rss, "bytes_per_connection": per_conn, "bytes_per_held_request": per_held}),
                );
                }
                Err(e) => {
                    goals.why("held", &format!("failed: {e:#}"));
                    notes.push(format!("held requests: failed: {e:#}"));
                }
            }
        }
        Err(why) => {
            goals.why("held", &format!("held requests: {why}"));
            notes.push(format!(
                "held requests: skipped: needs cold start (issue 6): {why}"
            ));
        }
    }
    drop(idle);

    // Idle keep-alive client connections after one response each, on a fresh instance.
    let mut fresh = start_ours(bin, cores, dir, "conns", &routes, &endpoints)?;
    wait_status(
        &mut fresh.proc,
        fresh.proxy,
        HOST,
        "/",
        200,
        Duration::from_secs(20),
    )?;
    let pid = fresh.proc.pid();
    match answered_connections(fresh.proxy, settings.held, || settled_rss(pid)) {
        Ok(rss) => {
            let per = rss.per_item(settings.held);
            goals.conn_bytes_ours = Some(per);
            table.row(vec![
                format!(
                    "keda-http with {} idle keep-alive connections after one response each",
                    settings.held
                ),
                report::mib(Some(rss.after)),
                format!(
                    "{per:.0} bytes per connection (goal ≤ 4 KiB: {})",
                    report::verdict(Some(per), GOAL_CONN_BYTES, true)
                ),
            ]);
            data.insert(
                "connections_after_response".into(),
                json!({"count": settings.held, "rss_kib": rss, "bytes_per_connection": per}),
            );
        }
        Err(e) => {
            goals.why("conn", &format!("failed: {e:#}"));
            notes.push(format!("idle keep-alive connections: failed: {e:#}"));
        }
    }
    drop(fresh);

    // The same two measurements for nginx (master + one worker, fresh for each).
    if which("nginx").is_some() {
        match nginx_memory(settings, cores, dir, backend) {
            Ok(n) => {
                goals.conn_bytes_nginx = Some(n.conn_bytes);
                goals.held_bytes_nginx = Some(n.held_bytes);
                table.row(vec![
                    format!(
                        "nginx with {} idle keep-alive connections after one response each",
                        settings.held
                    ),
                    report::mib(Some(n.conns.after)),
                    format!("{:.0} bytes per connection", n.conn_bytes),
                ]);
                table.row(vec![
                    format!(
                        "nginx holding {} requests on a silent upstream (one per connection)",
                        n.held_count
                    ),
                    report::mib(Some(n.held.held)),
                    format!(
                        "{:.0} bytes per held request incl. its client and upstream \
                         connections, {:.0} for the request alone",
                        n.held_bytes,
                        n.held_bytes - n.bare_conn_bytes
                    ),
                ]);
                data.insert("nginx".into(), json!(n));
            }
            Err(e) => {
                goals.why("nginx_memory", &format!("nginx: failed: {e:#}"));
                notes.push(format!("nginx memory peer: failed: {e:#}"));
            }
        }
    } else {
        notes.push(format!("nginx memory peer: skipped: {NGINX_MISSING}"));
    }

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

/// RSS of a proxy: before, with `n` idle connections open, and with a request held on each
/// (KiB).
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct HeldRss {
    before: u64,
    connections: u64,
    held: u64,
}

/// RSS of a proxy before and after `n` keep-alive connections got one response each (KiB).
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct ConnRss {
    before: u64,
    after: u64,
}

impl ConnRss {
    /// Bytes per connection.
    fn per_item(&self, n: usize) -> f64 {
        (self.after.saturating_sub(self.before) * 1024) as f64 / n.max(1) as f64
    }
}

/// How long a memory step may take before it fails.
const STEP_BOUND: Duration = Duration::from_secs(120);

/// Holds requests for the cold route on our interceptor, counted by its `/queue`.
fn held_memory(settings: &Settings, ours: &Ours) -> anyhow::Result<HeldRss> {
    let pid = ours.proc.pid();
    let admin = ours.admin;
    let key = format!("{}/{COLD_ROUTE}", routes::NAMESPACE);
    held_rss(
        ours.proxy,
        settings.held,
        || settled_rss(pid),
        || queue_concurrency(admin, &key).map(|c| usize::try_from(c).unwrap_or(0)),
    )
}

/// Opens `n` connections to `proxy`, then sends one request for the cold host on each, and
/// measures `rss` at each step; `held` says how many requests the proxy holds so far.
fn held_rss(
    proxy: SocketAddr,
    n: usize,
    rss: impl Fn() -> Option<u64>,
    held: impl Fn() -> Option<usize>,
) -> anyhow::Result<HeldRss> {
    use tokio::io::AsyncWriteExt as _;
    let before = rss().context("RSS")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(tokio::net::TcpStream::connect(proxy).await?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let connections = rss().context("RSS")?;
        for s in &mut conns {
            s.write_all(format!("GET / HTTP/1.1\r\nHost: {COLD_HOST}\r\n\r\n").as_bytes())
                .await?;
        }
        let deadline = Instant::now() + STEP_BOUND;
        loop {
            let now = held();
            if now.is_some_and(|h| h >= n) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {n} requests held after {STEP_BOUND:?}",
                now.unwrap_or(0)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let held = rss().context("RSS")?;
        drop(conns);
        anyhow::Ok(HeldRss {
            before,
            connections,
            held,
        })
    })
}

/// Opens `n` keep-alive connections to `proxy`, each gets one answered request for the bench
/// host and stays open; `rss` before and after.
fn answered_connections(
    proxy: SocketAddr,
    n: usize,
    rss: impl Fn() -> Option<u64>,
) -> anyhow::Result<ConnRss> {
    use tokio::io::AsyncWriteExt as _;
    let before = rss().context("RSS")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let open = async {
            let mut conns = Vec::with_capacity(n);
            for _ in 0..n {
                let mut s = tokio::net::TcpStream::connect(proxy).await?;
                s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
                    .await?;
                let status = read_response(&mut s).await?;
                anyhow::ensure!(status == 200, "the proxy answered {status}");
                conns.push(s);
            }
            anyhow::Ok(conns)
        };
        let conns = tokio::time::timeout(STEP_BOUND, open)
            .await
            .context("opening the connections took too long")??;
        let after = rss().context("RSS")?;
        drop(conns);
        anyhow::Ok(ConnRss { before, after })
    })
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body) and returns its status.
async fn read_response(s: &mut tokio::net::TcpStream) -> anyhow::Result<u16> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let got = s.read(&mut chunk).await?;
        anyhow::ensure!(got > 0, "connection closed before a whole response");
        buf.extend_from_slice(&chunk[..got]);
        if let Some(status) = whole_response(&buf)? {
            return Ok(status);
        }
    }
}

/// The status once `buf` holds a whole response (`None` while more is needed).
fn whole_response(buf: &[u8]) -> anyhow::Result<Option<u16>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end])?;
    let status = keda_http_benches::process::parse_status_line(head.as_bytes())
        .context("not an HTTP/1.x status line")?;
    let body = &buf[end + 4..];
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    if let Some(len) = header("content-length") {
        let len: usize = len.parse()?;
        return Ok((body.len() >= len).then_some(status));
    }
    if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        return Ok(body.ends_with(b"0\r\n\r\n").then_some(status));
    }
    Ok(Some(status))
}

/// What nginx costs per idle connection and per held request.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct NginxMemory {
    conns: ConnRss,
    held: HeldRss,
    /// Requests held (fewer than asked when the open-files limit has no room for a client and
    /// an upstream connection each).
    held_count: usize,
    conn_bytes: f64,
    bare_conn_bytes: f64,
    held_bytes: f64,
}

/// nginx (master + one worker, a fresh instance per measurement): idle keep-alive connections
/// after one response each, then requests held on a silent upstream.
fn nginx_memory(
    settings: &Settings,
    cores: Cores,
    dir: &Path,
    backend: SocketAddr,
) -> anyhow::Result<NginxMemory> {
    let n = settings.held;
    let (silent, silent_addr) = start_silent(cores, dir)?;
    let start = |name: &str| -> anyhow::Result<(nginx::Nginx, SocketAddr)> {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut peer = nginx::start_memory_peer(
            &dir.join(name),
            listen,
            (HOST, backend),
            (COLD_HOST, silent_addr),
            n,
            Some(cores.proxy),
        )?
        .context(NGINX_MISSING)?;
        wait_status(
            peer.proc_mut(),
            listen,
            HOST,
            "/",
            200,
            Duration::from_secs(20),
        )?;
        Ok((peer, listen))
    };
    let settled = |peer: &nginx::Nginx| {
        std::thread::sleep(Duration::from_millis(500));
        peer.rss_kib()
    };

    let (peer, addr) = start("nginx-conns")?;
    let conns = answered_connections(addr, n, || settled(&peer))?;
    drop(peer);

    // Each held request takes a client and an upstream descriptor in nginx's worker, which
    // cannot raise its open-files limit past our hard limit (worker_rlimit_nofile then fails
    // and nginx reuses connections): hold as many as fit, the cost is per request.
    let held_count =
        procfs::hard_nofile().map_or(n, |hard| n.min((hard.saturating_sub(1024) / 2) as usize));
    let (peer, addr) = start("nginx-held")?;
    let silent_pid = silent.pid();
    let base = open_fds(&silent).context("the silent upstream's descriptors")?;
    let held = held_rss(
        addr,
        held_count,
        || settled(&peer),
        || procfs::open_fds(silent_pid).map(|f| f.saturating_sub(base)),
    )?;
    drop(peer);
    drop(silent);
    let per = |kib: u64| (kib * 1024) as f64 / held_count.max(1) as f64;
    Ok(NginxMemory {
        conns,
        held,
        held_count,
        conn_bytes: conns.per_item(n),
        bare_conn_bytes: per(held.connections.saturating_sub(held.before)),
        held_bytes: per(held.held.saturating_sub(held.before)),
    })
}

fn open_fds(proc: &Proc) -> Option<usize> {
    procfs::open_fds(proc.pid())
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
