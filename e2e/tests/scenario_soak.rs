//! Zero-loss soak (issue 10): open-loop load at a fixed rate through 0 → N → 0 with endpoint
//! churn and a forced watch loss; every request must be answered 2xx. The tally is printed.
//!
//! `E2E_SOAK_SECONDS` sets the load's length (default 20 s so `cargo test` stays fast;
//! `E2E_SOAK_SECONDS=60` runs the full 60 s). During the load, on a fixed schedule:
//!
//! - from zero: the first requests are held through the cold start, the app scales to N ≥ 2
//!   (30 requests/s of 150 ms each against a target concurrency of 2);
//! - at 1/3: one app pod gets `SIGTERM` (a deleted pod: it fails readiness, drains and exits;
//!   the simulator restarts it), and the test awaits the endpoints being ready again;
//! - at 1/2 (in-memory API only): every watch of every component is closed by the API
//!   stand-in's fault injection, so all of them re-list and re-watch;
//! - at 2/3: another pod gets `SIGTERM`;
//! - at the end the load stops and the app returns to 0.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::*;
use tokio::time::Instant;

const RATE: f64 = 30.0;

fn soak_duration() -> Duration {
    let seconds = std::env::var("E2E_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20u64);
    Duration::from_secs(seconds.max(6))
}

/// Addresses (pod IP and port) of the ready endpoints of Service `hello` in `ns`.
async fn ready_addrs(h: &keda_http_e2e::harness::Harness, ns: &str) -> Vec<SocketAddr> {
    let slices: Api<EndpointSlice> = Api::namespaced(h.client(), ns);
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=hello"))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|s| {
            s.endpoints
                .iter()
                .flatten()
                .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        })
        .filter_map(|s| {
            let port = u16::try_from(s.ports.as_ref()?.first()?.port?).ok()?;
            let ip: IpAddr = s
                .endpoints
                .as_ref()?
                .first()?
                .addresses
                .first()?
                .parse()
                .ok()?;
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

/// The pid of this test process's child `hello` listening on `addr` (the simulator spawns
/// pods with `BIND_ADDRESS=<ip>` and `PORT=<port>`).
fn pod_pid(addr: SocketAddr) -> Option<i32> {
    let me = std::process::id().to_string();
    let wanted = [
        format!("PORT={}", addr.port()),
        format!("BIND_ADDRESS={}", addr.ip()),
    ];
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1);
        if !comm.ends_with("(hello") || ppid != Some(me.as_str()) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if wanted.iter().all(|w| vars.contains(&w.as_bytes())) {
            return Some(pid);
        }
    }
    None
}

/// `SIGTERM` to one ready pod of the app, then waits until `spec.replicas` pods are ready
/// again (the simulator restarted it).
async fn kill_a_pod(h: &keda_http_e2e::harness::Harness, ns: &str) {
    let addrs = ready_addrs(h, ns).await;
    let addr = *addrs.first().expect("no ready pod to kill");
    let pid = pod_pid(addr).unwrap_or_else(|| panic!("no hello child on {addr}"));
    println!("soak: SIGTERM to the pod on {addr} (pid {pid})");
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    within("the killed pod's endpoint to go", async {
        while ready_addrs(h, ns).await.contains(&addr) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    within("the pods to be ready again", async {
        loop {
            let (spec, _, ready) = replicas(h, ns, "hello").await;
            if ready >= spec as usize && spec > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_loss_through_scaling_pod_kills_and_a_watch_loss() {
    let duration = soak_duration();
    let Some(h) = start(|_| {}).await else {
        return;
    };
    let sets = [
        "hosts={soak.test}",
        "scaling.targetConcurrency=2",
        "scaling.maxReplicas=5",
        "app.shutdownDelayMs=1000",
    ];
    let Some(yaml) = hello_chart("hello", "soak", &sets) else {
        return;
    };
    namespace(&h, "soak").await;
    apply_docs(&h, docs(&yaml), "soak").await;
    wait_route_known(&h, "soak/hello").await;
    wait_replicas(&h, "soak", "hello", 0).await;

    let started = Instant::now();
    let (stop_load, load_stopped) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn(open_loop(
        h.proxy_addr(),
        RATE,
        |_| get("soak.test", "/?delay_ms=150"),
        async {
            let _ = load_stopped.await;
        },
    ));
    let at = |fraction: f64| started + duration.mul_f64(fraction);

    let n = wait_spec(&h, "soak", "hello", |r| r >= 2).await;
    println!("soak: scaled 0 -> {n}");
    tokio::time::sleep_until(at(1.0 / 3.0)).await;
    kill_a_pod(&h, "soak").await;
    tokio::time::sleep_until(at(0.5)).await;
    if let Some(api) = h.local_api() {
        println!("soak: closing every watch");
        api.faults().close_watches();
    }
    tokio::time::sleep_until(at(2.0 / 3.0)).await;
    kill_a_pod(&h, "soak").await;
    tokio::time::sleep_until(at(1.0)).await;
    let max = replicas(&h, "soak", "hello").await.0;
    stop_load.send(()).unwrap();
    let tally = load.await.unwrap();
    println!(
        "soak: {} s at {RATE}/s: {}",
        duration.as_secs(),
        tally.summary()
    );
    assert_eq!(tally.failures(), 0, "{}", tally.summary());
    assert!(max >= 1);
    wait_replicas(&h, "soak", "hello", 0).await;
    println!("soak: back to 0");
    h.stop().await;
}
