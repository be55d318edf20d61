//! `keda-http-benches`: the `cargo bench` suites of keda-http.
//!
//! Owns the micro benchmarks (routing, counting, endpoint selection; `benches/micro.rs`,
//! criterion) and the whole-system runs (`benches/proxy.rs`, its own `main`): throughput and
//! proxy CPU side by side with nginx, a minimal hyper proxy and a direct connection, 2 vs 1
//! Tokio workers, latency at half load and a fixed rate from an open-loop generator,
//! cold-start wake (against a direct baseline) and activation latency, and memory (ours and
//! nginx); the report opens with the issue 19 goals table. It holds no product code, and no
//! test here measures time: timings never decide pass or fail.
//!
//! The harness lives in this library so that its arithmetic is unit-tested:
//! [`process`] (pinned child processes killed on drop), [`wrk`] (closed-loop load),
//! [`openloop`] (fixed-rate load measured from scheduled send times), [`nginx`] (the
//! reference peer), [`minimal_proxy`] (the bare hyper peer), [`goals`] (the goals table and
//! its verdicts), [`routes`] (synthetic tables), [`procfs`] (CPU ticks, RSS, children, open
//! descriptors, load), [`stats`] (percentiles, medians, ratios), [`report`] (markdown and
//! JSON) and [`criterion_results`] (micro numbers for the same report).

pub mod criterion_results;
pub mod goals;
pub mod minimal_proxy;
pub mod nginx;
pub mod openloop;
pub mod process;
pub mod procfs;
pub mod report;
pub mod routes;
pub mod stats;
pub mod wrk;

use std::path::PathBuf;
use std::time::Duration;

/// An unsigned setting from the environment, or `default` when unset or unparsable.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A duration in seconds from the environment (fractions allowed), or `default_secs`.
pub fn env_secs(name: &str, default_secs: f64) -> Duration {
    let secs = std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(default_secs);
    Duration::from_secs_f64(secs)
}

/// Cargo's target directory, from the path of a binary it built
/// (`<target>/<profile>/deps/<name>-<hash>`), honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_settings_fall_back_to_defaults() {
        assert_eq!(env_u64("KEDA_BENCH_TEST_UNSET_VARIABLE", 7), 7);
        assert_eq!(
            env_secs("KEDA_BENCH_TEST_UNSET_VARIABLE", 1.5),
            Duration::from_millis(1500)
        );
    }
}
