//! Push subscriptions: one `/queue/watch` stream per interceptor pod.
//!
//! Every snapshot line is applied to the aggregate at once and announced, so a route going
//! from idle to active reaches every open `StreamIsActive` stream without waiting for the poll
//! tick. While a pod's stream delivers snapshots (at least once per two ticks), the poll loop
//! skips that pod, and while it is connected poll answers from that pod are not applied (one
//! source at a time keeps snapshots in order); when the stream is down (refused, 404 from an official interceptor, broken,
//! silent) the pod is polled again and the subscription retries with a capped exponential
//! backoff.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::aggregate::QueueState;
use crate::discovery::Interceptors;
use crate::fetch::QueueClient;

/// First retry delay after a stream fails.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Keeps one subscription per discovered interceptor.
#[derive(Debug)]
pub(crate) struct PushSubscriptions {
    pub(crate) state: Arc<QueueState>,
    pub(crate) client: QueueClient,
    pub(crate) interceptors: watch::Receiver<Interceptors>,
    /// A stream that delivers nothing for this long is treated as down and reopened.
    pub(crate) silence_timeout: Duration,
}

impl PushSubscriptions {
    /// Follows the interceptor set until `cancel`, then ends every subscription.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut running: BTreeMap<SocketAddr, JoinHandle<()>> = BTreeMap::new();
        loop {
            let addrs = self.interceptors.borrow_and_update().clone();
            running.retain(|addr, task| {
                let keep = addrs.contains(addr);
                if !keep {
                    task.abort();
                }
                keep
            });
            for addr in addrs.iter() {
                running.entry(*addr).or_insert_with(|| {
                    let state = Arc::clone(&self.state);
                    let client = self.client.clone();
                    let silence = self.silence_timeout;
                    tokio::spawn(subscribe(state, client, *addr, silence))
                });
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = self.interceptors.changed() => {
                    if changed.is_err() {
                        cancel.cancelled().await;
                        break;
                    }
                }
            }
        }
        for (_, task) in running {
            task.abort();
        }
    }
}

/// Follows one pod's stream forever (the task is aborted when the pod goes away).
async fn subscribe(
    state: Arc<QueueState>,
    client: QueueClient,
    addr: SocketAddr,
    silence: Duration,
) {
    let mut backoff = BACKOFF_START;
    loop {
        match client.watch(addr).await {
            Ok(mut stream) => {
                tracing::debug!(%addr, "push stream open");
                loop {
                    let next = match tokio::time::timeout(silence, stream.next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            tracing::debug!(%addr, ?silence, "push stream silent; reopening");
                            break;
                        }
                    };
                    match next {
                        Some(Ok(counts)) => {
                            backoff = BACKOFF_START;
                            let now = state.now();
                            let changed = state.lock().apply_push(now, addr, counts);
                            if changed == Some(true) {
                                state.announce();
                            }
                        }
                        Some(Err(error)) => {
                            tracing::debug!(%addr, %error, "push stream failed");
                            break;
                        }
                        None => {
                            tracing::debug!(%addr, "push stream ended");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(%addr, %error, "push stream unavailable"),
        }
        if state.lock().set_push_connected(addr, false) {
            state.announce();
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
    }
}
