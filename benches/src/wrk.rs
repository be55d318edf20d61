//! `wrk` (closed loop, HTTP/1.1 keep-alive): running it and reading its report.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::process::pinned;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WrkResult {
    /// Completed requests.
    pub requests: u64,
    /// Length of the measured run, seconds (wrk's own figure).
    pub seconds: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

/// A wrk run: `connections` keep-alive connections from one thread for `duration`.
#[derive(Debug, Clone)]
pub struct WrkRun {
    /// Target.
    pub addr: SocketAddr,
    /// `Host` header to send.
    pub host: String,
    /// Request path.
    pub path: String,
    /// Open connections.
    pub connections: u32,
    /// Length.
    pub duration: Duration,
    /// CPU to pin wrk to.
    pub cpu: Option<usize>,
}

impl WrkRun {
    /// Runs wrk to completion and parses its report.
    pub fn run(&self) -> anyhow::Result<WrkResult> {
        let secs = self.duration.as_secs().max(1);
        let mut cmd = pinned("wrk", self.cpu);
        cmd.args(["-t1", "--latency"])
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{secs}s"))
            .arg(format!("--timeout={}s", secs.max(5)))
            .arg("-H")
            .arg(format!("Host: {}", self.host))
            .arg(format!("http://{}{}", self.addr, self.path))
            .stdin(Stdio::null());
        let out = cmd.output().context("run wrk")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk failed ({}): {}{}",
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
    }
}

/// A wrk duration (`512.00us`, `1.20ms`, `2.00s`, `1.00m`) in µs.
pub fn parse_duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1_000.0,
        "s" => 1_000_000.0,
        "m" => 60_000_000.0,
        "h" => 3_600_000_000.0,
        _ => return None,
    };
    Some(value * scale)
}

/// Reads wrk's text report (run with `--latency`).
pub fn parse(text: &str) -> anyhow::Result<WrkResult> {
    let mut requests = None;
    let mut seconds = None;
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = 0u64;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", d] => p50 = parse_duration_us(d),
            ["99%", d] => p99 = parse_duration_us(d),
            [n, "requests", "in", d, ..] => {
                requests = n.parse::<u64>().ok();
                seconds = parse_duration_us(d.trim_end_matches(',')).map(|us| us / 1e6);
            }
            ["Requests/sec:", r] => rps = r.parse::<f64>().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    match (requests, seconds, rps, p50, p99) {
        (Some(requests), Some(seconds), Some(rps), Some(p50_us), Some(p99_us)) => Ok(WrkResult {
            requests,
            seconds,
            rps,
            p50_us,
            p99_us,
            errors,
        }),
        _ => bail!("missing requests, duration, Requests/sec or latency percentiles"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  12.34ms   89.00%
    Req/Sec    52.00k     2.00k   55.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.40ms
     90%    1.60ms
     99%    2.50ms
  520123 requests in 10.00s, 70.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  52012.30
Transfer/sec:      7.00MB
";

    #[test]
    fn reads_a_report() {
        let r = parse(REPORT).expect("parses");
        assert_eq!(r.requests, 520_123);
        assert_eq!(r.seconds, 10.0);
        assert_eq!(r.rps, 52_012.3);
        assert_eq!(r.p50_us, 850.0);
        assert_eq!(r.p99_us, 2_500.0);
        assert_eq!(r.errors, 16);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_us("512.00us"), Some(512.0));
        assert_eq!(parse_duration_us("1.5ms"), Some(1500.0));
        assert_eq!(parse_duration_us("2.00s"), Some(2e6));
        assert_eq!(parse_duration_us("1.00m"), Some(6e7));
        assert_eq!(parse_duration_us("12"), None);
        assert_eq!(parse_duration_us("1.0x"), None);
    }

    #[test]
    fn incomplete_reports_are_errors() {
        assert!(parse("Requests/sec: 10\n").is_err());
    }
}
