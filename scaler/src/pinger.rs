//! The poll loop: every tick, fetch `/queue` from every interceptor pod whose push stream is
//! not fresh, in parallel, each bounded by the fetch timeout, then apply the results.
//!
//! The fetches run without any lock; only applying the finished results takes the
//! aggregator's lock, so `GetMetrics` never waits on an interceptor, and a hung interceptor
//! costs one fetch timeout per tick and nothing else.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use crate::aggregate::{PollResult, PollSummary, QueueState};
use crate::discovery::Interceptors;
use crate::fetch::QueueClient;
use crate::health::{self, Health};
use crate::metrics::Metrics;

/// Everything the poll loop needs.
#[derive(Debug)]
pub(crate) struct Pinger {
    pub(crate) state: Arc<QueueState>,
    pub(crate) client: QueueClient,
    pub(crate) interceptors: watch::Receiver<Interceptors>,
    pub(crate) tick: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) metrics: Metrics,
    pub(crate) health: Health,
}

impl Pinger {
    /// Polls every tick until `cancel`. The first poll happens at once; a change of the
    /// interceptor set prunes departed pods at once as well.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut discovery_open = true;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {
                    // A poll waits on the network: it must not hold up shutdown.
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = self.poll_once() => {}
                    }
                }
                changed = self.interceptors.changed(), if discovery_open => {
                    if changed.is_err() {
                        // Discovery ended: keep polling the last known set.
                        discovery_open = false;
                        continue;
                    }
                    let addrs = self.interceptors.borrow_and_update().clone();
                    let changed = self.state.lock().set_interceptors(&addrs);
                    if changed {
                        self.state.announce();
                    }
                }
            }
        }
    }

    /// A pod whose push stream delivered within this long is not polled (the interceptor
    /// heartbeats its stream; two ticks leave room for jitter).
    fn push_fresh(&self) -> Duration {
        self.tick.saturating_mul(2)
    }

    async fn poll_once(&mut self) {
        let addrs = self.interceptors.borrow_and_update().clone();
        let now = self.state.now();
        let (targets, pruned) = {
            let mut agg = self.state.lock();
            let pruned = agg.set_interceptors(&addrs);
            (agg.poll_targets(now, self.push_fresh()), pruned)
        };
        if pruned {
            self.state.announce();
        }
        let started = Instant::now();
        let fetches = targets.into_iter().map(|target| {
            let client = self.client.clone();
            let timeout = self.fetch_timeout;
            async move {
                let counts = match tokio::time::timeout(timeout, client.fetch(target.addr)).await {
                    Ok(Ok(counts)) => Some(counts),
                    Ok(Err(error)) => {
                        tracing::debug!(addr = %target.addr, %error, "queue fetch failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(addr = %target.addr, ?timeout, "queue fetch timed out");
                        None
                    }
                };
                PollResult { target, counts }
            }
        });
        // Apply each answer as soon as it arrives: a slow or hung pod delays nothing but
        // itself (and the next tick, by at most the fetch timeout).
        let mut pending: FuturesUnordered<_> = fetches.collect();
        let mut summary = PollSummary {
            endpoints: addrs.len(),
            ..PollSummary::default()
        };
        while let Some(result) = pending.next().await {
            let now = self.state.now();
            let one = self.state.lock().apply_poll(now, vec![result]);
            summary.polled += one.polled;
            summary.unreachable += one.unreachable;
            if one.changed {
                self.state.announce();
            }
        }
        self.metrics
            .fetch_duration
            .observe(started.elapsed().as_secs_f64());
        let now = self.state.now();
        let (serving, pushes) = {
            let mut agg = self.state.lock();
            agg.end_cycle(now, self.push_fresh());
            (
                health::is_serving(agg.last_contact(), now, self.tick),
                agg.push_connected(),
            )
        };
        if summary.endpoints == 0 || (summary.polled > 0 && summary.unreachable == summary.polled) {
            self.metrics.fetch_errors.inc();
            if summary.endpoints == 0 {
                tracing::debug!("there isn't any valid interceptor endpoint");
            } else {
                tracing::warn!(
                    unreachable = summary.unreachable,
                    "no interceptor answered this tick"
                );
            }
        }
        self.metrics
            .endpoints
            .set(i64::try_from(summary.endpoints).unwrap_or(i64::MAX));
        self.metrics
            .unreachable_pods
            .set(i64::try_from(summary.unreachable).unwrap_or(i64::MAX));
        self.metrics
            .push_streams
            .set(i64::try_from(pushes).unwrap_or(i64::MAX));
        self.health.set(serving).await;
    }
}
