//! An open-loop load generator: requests are *scheduled* at a fixed rate whatever the server
//! does, and each latency is measured from the request's scheduled send time, so a slow
//! response delays no later measurement and queueing in front of a busy server is counted
//! (no coordinated omission, unlike closed-loop `wrk`).
//!
//! A plain OS thread keeps the schedule (`std::thread::sleep` is good to tens of µs, Tokio's
//! timer only to 1 ms) and hands due send times to `connections` workers, each owning one
//! HTTP/1.1 keep-alive connection, on a current-thread Tokio runtime driven by the calling
//! thread. When every connection is
//! busy, due requests wait in the queue and their wait is part of their latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

use crate::stats::{LatencySummary, Samples};

/// What to send, how fast, for how long.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenLoop {
    /// Target.
    pub addr: SocketAddr,
    /// `Host` header.
    pub host: String,
    /// Request path.
    pub path: String,
    /// Requests per second.
    pub rate: f64,
    /// Unmeasured lead-in.
    pub warmup: Duration,
    /// Measured part.
    pub duration: Duration,
    /// Keep-alive connections.
    pub connections: usize,
}

/// What an open-loop run measured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct OpenLoopResult {
    /// Requests scheduled in the measured part.
    pub scheduled: u64,
    /// Of those, answered 200.
    pub ok: u64,
    /// Of those, failed or answered something else.
    pub errors: u64,
    /// Schedule rate asked for.
    pub rate: f64,
    /// Latency from scheduled send time to the end of the response body (successes only).
    pub latency: Option<LatencySummaryDto>,
}

/// [`LatencySummary`] with serde both ways (it crosses a process boundary as JSON).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LatencySummaryDto {
    /// Samples.
    pub count: usize,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest, µs.
    pub max_us: u64,
}

impl From<LatencySummary> for LatencySummaryDto {
    fn from(s: LatencySummary) -> Self {
        Self {
            count: s.count,
            p50_us: s.p50_us,
            p90_us: s.p90_us,
            p99_us: s.p99_us,
            p999_us: s.p999_us,
            max_us: s.max_us,
        }
    }
}

/// The scheduled send time of request `i` (0-based) at `rate` per second, from the start.
pub fn scheduled_offset(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// How many requests are due `elapsed` after the start at `rate` per second (those with
/// offsets ≤ elapsed).
pub fn due_by(elapsed: Duration, rate: f64) -> u64 {
    (elapsed.as_secs_f64() * rate).floor() as u64 + 1
}

/// One scheduled request: when it should have been sent, and whether it is measured.
#[derive(Debug, Clone, Copy)]
struct Slot {
    at: Instant,
    measured: bool,
}

/// Runs the schedule (warm-up, then the measured part) and returns the measured part's result.
pub fn run(config: &OpenLoop) -> anyhow::Result<OpenLoopResult> {
    anyhow::ensure!(config.rate > 0.0, "rate must be positive");
    anyhow::ensure!(config.connections > 0, "need at least one connection");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, rx) = mpsc::unbounded_channel::<Slot>();
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..config.connections)
        .map(|_| runtime.spawn(worker(config.clone(), Arc::clone(&rx))))
        .collect();

    // The schedule, on its own OS thread; the workers run on this one (a current-thread
    // runtime only makes progress inside `block_on`).
    let warmup_n = due_by(config.warmup, config.rate).saturating_sub(1);
    let total = warmup_n + (config.duration.as_secs_f64() * config.rate).round() as u64;
    let rate = config.rate;
    let schedule = std::thread::spawn(move || {
        let start = Instant::now();
        let mut next = 0u64;
        while next < total {
            let due = due_by(start.elapsed(), rate).min(total);
            while next < due {
                let slot = Slot {
                    at: start + scheduled_offset(next, rate),
                    measured: next >= warmup_n,
                };
                if tx.send(slot).is_err() {
                    return false;
                }
                next += 1;
            }
            if next < total {
                let wake = start + scheduled_offset(next, rate);
                if let Some(wait) = wake.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
        true
    });

    let mut samples = Samples::with_capacity((total - warmup_n) as usize);
    let mut errors = 0u64;
    runtime.block_on(async {
        for w in workers {
            let (s, e) = w.await.context("open-loop worker panicked")?;
            samples.extend(&s);
            errors += e;
        }
        anyhow::Ok(())
    })?;
    let completed = schedule
        .join()
        .map_err(|_| anyhow::anyhow!("the schedule thread panicked"))?;
    anyhow::ensure!(completed, "every open-loop worker stopped");
    Ok(OpenLoopResult {
        scheduled: total - warmup_n,
        ok: samples.len() as u64,
        errors,
        rate: config.rate,
        latency: samples.summary().map(Into::into),
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn send(sender: &mut Sender, config: &OpenLoop) -> anyhow::Result<bool> {
    sender.ready().await?;
    let request = http::Request::get(config.path.as_str())
        .header(http::header::HOST, config.host.as_str())
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let ok = response.status() == http::StatusCode::OK;
    response.into_body().collect().await?;
    Ok(ok)
}

async fn worker(config: OpenLoop, rx: Arc<Mutex<mpsc::UnboundedReceiver<Slot>>>) -> (Samples, u64) {
    let mut samples = Samples::new();
    let mut errors = 0u64;
    let mut sender: Option<Sender> = None;
    loop {
        let slot = { rx.lock().await.recv().await };
        let Some(slot) = slot else { break };
        let ok = async {
            let s = match sender.as_mut() {
                Some(s) => s,
                None => sender.insert(connect(config.addr).await?),
            };
            send(s, &config).await
        }
        .await;
        let latency = slot.at.elapsed();
        match ok {
            Ok(true) => {
                if slot.measured {
                    samples.push(latency.as_micros() as u64);
                }
            }
            Ok(false) => errors += u64::from(slot.measured),
            Err(_) => {
                sender = None;
                errors += u64::from(slot.measured);
            }
        }
    }
    (samples, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_evenly_spaced_from_the_start() {
        assert_eq!(scheduled_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(scheduled_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(scheduled_offset(2500, 1000.0), Duration::from_millis(2500));
        assert_eq!(scheduled_offset(3, 4.0), Duration::from_millis(750));
    }

    #[test]
    fn due_counts_include_the_request_at_zero() {
        assert_eq!(due_by(Duration::ZERO, 1000.0), 1);
        assert_eq!(due_by(Duration::from_micros(999), 1000.0), 1);
        assert_eq!(due_by(Duration::from_millis(1), 1000.0), 2);
        assert_eq!(due_by(Duration::from_secs(1), 100.0), 101);
    }
}
