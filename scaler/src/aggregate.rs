//! Aggregation of the interceptors' queue counts (compat §4.3), fed by polls and pushes.
//!
//! Per interceptor pod the latest `/queue` snapshot is kept, whichever way it arrived (a poll
//! of `/queue` or a line of the `/queue/watch` push stream). Per route key:
//! - concurrency is the sum over pods of their latest concurrency; an unreachable pod that is
//!   still in the EndpointSlice keeps contributing its last known value;
//! - the request delta of a new snapshot is `RequestCount − previous` per pod; a pod's first
//!   snapshot and a key new on a known pod contribute 0; a decrease (the interceptor
//!   restarted) contributes the full new value; deltas feed the route's [`RateHistory`] and
//!   its monotonic `requests_seen` total (used for sparse-traffic activity);
//! - pods that leave the EndpointSlice are pruned, and keys no pod reports any more are
//!   dropped with their history.
//!
//! [`QueueState`] wraps the [`Aggregator`] for sharing: writers hold its lock only to apply a
//! snapshot that has already been fetched, so a reader (`GetMetrics`) never waits on the
//! network, and every applied change is announced on a watch channel that `StreamIsActive`
//! streams follow.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use keda_http_api::queue::QueueCounts;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::rate::{RateConfig, RateHistory};

/// What the aggregator knows about one interceptor pod.
#[derive(Debug, Default)]
struct Pod {
    /// Latest snapshot, `None` until the first one arrives.
    counts: Option<QueueCounts>,
    /// Whether the latest poll (or push) reached the pod.
    reachable: bool,
    /// Bumped on every applied snapshot; a poll whose generation is out of date is stale.
    generation: u64,
    /// Whether a push stream is connected.
    push_connected: bool,
    /// When the push stream last delivered a snapshot.
    last_push: Option<Duration>,
}

/// The aggregated state of one route key.
#[derive(Debug, Default)]
pub struct KeyState {
    /// In-flight requests summed over pods.
    pub concurrency: i64,
    /// Requests seen since this scaler first saw the key (sum of positive deltas).
    pub requests_seen: u64,
    rate: RateHistory,
    /// Number of pods whose latest snapshot lists the key.
    pods: u32,
}

/// Which pod to poll, and the generation its snapshot had when the poll started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollTarget {
    /// Pod address (IP and admin port).
    pub addr: SocketAddr,
    /// Generation of the pod's snapshot when the poll started.
    pub generation: u64,
}

/// The outcome of polling one pod.
#[derive(Debug)]
pub struct PollResult {
    /// The poll target.
    pub target: PollTarget,
    /// The snapshot, or `None` if the pod could not be reached in time.
    pub counts: Option<QueueCounts>,
}

/// A summary of one poll cycle.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollSummary {
    /// Pods in the EndpointSlice.
    pub endpoints: usize,
    /// Pods polled this cycle (the others had a fresh push stream).
    pub polled: usize,
    /// Polled pods that did not answer.
    pub unreachable: usize,
    /// Whether any route's concurrency or request total changed (or a route came or went).
    pub changed: bool,
}

/// Pure aggregation state; see the module docs.
#[derive(Debug, Default)]
pub struct Aggregator {
    pods: BTreeMap<SocketAddr, Pod>,
    keys: BTreeMap<String, KeyState>,
    /// Last time any pod answered (poll or push).
    last_contact: Option<Duration>,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the set of interceptor pods: new pods are added (no snapshot yet), departed
    /// pods are pruned together with their cached counts. Returns whether the aggregate
    /// changed.
    pub fn set_interceptors(&mut self, addrs: &BTreeSet<SocketAddr>) -> bool {
        let departed: Vec<SocketAddr> = self
            .pods
            .keys()
            .filter(|addr| !addrs.contains(addr))
            .copied()
            .collect();
        let mut changed = false;
        for addr in departed {
            if let Some(counts) = self.pods.remove(&addr).and_then(|pod| pod.counts) {
                changed |= subtract(&mut self.keys, &counts);
            }
        }
        for addr in addrs {
            self.pods.entry(*addr).or_default();
        }
        changed
    }

    /// The pods to poll: every known pod whose push stream has not delivered a snapshot
    /// within `push_fresh` of `now`.
    pub fn poll_targets(&self, now: Duration, push_fresh: Duration) -> Vec<PollTarget> {
        self.pods
            .iter()
            .filter(|(_, pod)| !pod.push_is_fresh(now, push_fresh))
            .map(|(addr, pod)| PollTarget {
                addr: *addr,
                generation: pod.generation,
            })
            .collect()
    }

    /// Applies one poll cycle. A result for a pod that left the slice is ignored. A result
    /// only proves the pod reachable, without being applied, when the pod got a newer
    /// snapshot by push while the poll was in flight, or when its push stream is connected:
    /// one source at a time per pod keeps snapshots in order, so an old snapshot can never
    /// pass for a counter reset.
    pub fn apply_poll(&mut self, now: Duration, results: Vec<PollResult>) -> PollSummary {
        let mut summary = PollSummary {
            endpoints: self.pods.len(),
            polled: results.len(),
            unreachable: 0,
            changed: false,
        };
        for result in results {
            let Some(pod) = self.pods.get_mut(&result.target.addr) else {
                continue;
            };
            match result.counts {
                None => {
                    pod.reachable = false;
                    summary.unreachable += 1;
                }
                Some(counts) => {
                    self.last_contact = Some(now);
                    if pod.generation == result.target.generation && !pod.push_connected {
                        summary.changed |= self.observe(now, result.target.addr, counts);
                    } else {
                        pod.reachable = true;
                    }
                }
            }
        }
        summary
    }

    /// The end of a poll cycle: records a zero sample for every route (so a route's rate
    /// history knows it is still observed) and counts fresh push streams as contact.
    pub fn end_cycle(&mut self, now: Duration, push_fresh: Duration) {
        for state in self.keys.values_mut() {
            state.rate.record(now, 0);
        }
        if self
            .pods
            .values()
            .any(|pod| pod.push_is_fresh(now, push_fresh))
        {
            self.last_contact = Some(now);
        }
    }

    /// Applies a snapshot pushed by `addr`. Returns `None` (and ignores it) if the pod is not
    /// in the slice, else whether the aggregate changed (including the stream becoming
    /// connected).
    pub fn apply_push(
        &mut self,
        now: Duration,
        addr: SocketAddr,
        counts: QueueCounts,
    ) -> Option<bool> {
        let pod = self.pods.get_mut(&addr)?;
        let connected_now = !pod.push_connected;
        pod.push_connected = true;
        pod.last_push = Some(now);
        self.last_contact = Some(now);
        let changed = self.observe(now, addr, counts);
        Some(changed || connected_now)
    }

    /// Records that the push stream of `addr` connected or went down; returns whether that
    /// changed anything.
    pub fn set_push_connected(&mut self, addr: SocketAddr, connected: bool) -> bool {
        let Some(pod) = self.pods.get_mut(&addr) else {
            return false;
        };
        let changed = pod.push_connected != connected;
        pod.push_connected = connected;
        if !connected {
            pod.last_push = None;
        }
        changed
    }

    /// Number of pods whose push stream is connected.
    pub fn push_connected(&self) -> usize {
        self.pods.values().filter(|p| p.push_connected).count()
    }

    /// The state of a route key, if any pod reports it.
    pub fn key(&self, key: &str) -> Option<&KeyState> {
        self.keys.get(key)
    }

    /// Concurrency of a key (0 if unknown).
    pub fn concurrency(&self, key: &str) -> i64 {
        self.keys.get(key).map_or(0, |k| k.concurrency)
    }

    /// Requests seen for a key since the scaler first saw it (0 if unknown).
    pub fn requests_seen(&self, key: &str) -> u64 {
        self.keys.get(key).map_or(0, |k| k.requests_seen)
    }

    /// Concurrency summed over every key (interceptor self-scaling).
    pub fn total_concurrency(&self) -> i64 {
        self.keys.values().map(|k| k.concurrency).sum()
    }

    /// Requests seen summed over every key.
    pub fn total_requests_seen(&self) -> u64 {
        self.keys
            .values()
            .map(|k| k.requests_seen)
            .fold(0, u64::saturating_add)
    }

    /// The windowed request rate of a key (0 if unknown); keeps enough history for `config`
    /// from now on.
    pub fn rate(&mut self, key: &str, now: Duration, config: RateConfig) -> f64 {
        match self.keys.get_mut(key) {
            Some(state) => {
                state.rate.retain_for(config);
                state.rate.window_average(now, config)
            }
            None => 0.0,
        }
    }

    /// Last time any pod answered.
    pub fn last_contact(&self) -> Option<Duration> {
        self.last_contact
    }

    /// Number of known pods.
    pub fn endpoints(&self) -> usize {
        self.pods.len()
    }

    /// Number of pods whose latest poll failed.
    pub fn unreachable(&self) -> usize {
        self.pods.values().filter(|p| !p.reachable).count()
    }

    /// Route keys currently reported.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Takes a new snapshot of pod `addr` (which must be known): replaces the pod's
    /// contribution to the route sums and records its request deltas. Returns whether any
    /// route's concurrency or request total changed, or a route came or went. The cost is
    /// proportional to the pod's routes, not to every pod's.
    fn observe(&mut self, now: Duration, addr: SocketAddr, counts: QueueCounts) -> bool {
        let Some(pod) = self.pods.get_mut(&addr) else {
            return false;
        };
        let mut deltas: Vec<(&str, u64)> = Vec::new();
        let mut changed = false;
        match &pod.counts {
            Some(previous) => {
                for (key, count) in &counts.0 {
                    let Some(before) = previous.0.get(key) else {
                        // A key new on a known pod contributes 0 requests.
                        changed = true;
                        continue;
                    };
                    changed |= before.concurrency.max(0) != count.concurrency.max(0);
                    let current = count.request_count.max(0);
                    let delta = if current >= before.request_count {
                        current - before.request_count.max(0)
                    } else {
                        // The counter went backwards: the interceptor restarted.
                        current
                    };
                    let delta = u64::try_from(delta).unwrap_or(0);
                    if delta > 0 {
                        deltas.push((key.as_str(), delta));
                    }
                }
                changed |= previous.0.keys().any(|k| !counts.0.contains_key(k));
            }
            // A pod's first snapshot contributes its concurrency but no requests.
            None => changed |= !counts.0.is_empty(),
        }
        // Add the new contribution before removing the old one, so a route reported by this
        // pod alone keeps its state.
        add(&mut self.keys, &counts, now);
        for (key, delta) in deltas {
            if let Some(state) = self.keys.get_mut(key) {
                state.requests_seen = state.requests_seen.saturating_add(delta);
                state.rate.record(now, delta);
                changed = true;
            }
        }
        let previous = pod.counts.replace(counts);
        pod.reachable = true;
        pod.generation = pod.generation.wrapping_add(1);
        if let Some(previous) = previous {
            changed |= subtract(&mut self.keys, &previous);
        }
        changed
    }
}

/// Adds one pod's snapshot to the route sums; a route seen for the first time starts its
/// rate history now.
fn add(keys: &mut BTreeMap<String, KeyState>, counts: &QueueCounts, now: Duration) {
    for (key, count) in &counts.0 {
        let state = match keys.get_mut(key) {
            Some(state) => state,
            None => {
                let state = keys.entry(key.clone()).or_default();
                state.rate.record(now, 0);
                state
            }
        };
        state.concurrency = state.concurrency.saturating_add(count.concurrency.max(0));
        state.pods = state.pods.saturating_add(1);
    }
}

/// Removes one pod's snapshot from the route sums; a route no pod reports any more is
/// dropped with its history. Returns whether a route was dropped.
fn subtract(keys: &mut BTreeMap<String, KeyState>, counts: &QueueCounts) -> bool {
    let mut dropped = false;
    for (key, count) in &counts.0 {
        if let Some(state) = keys.get_mut(key) {
            state.concurrency = state.concurrency.saturating_sub(count.concurrency.max(0));
            state.pods = state.pods.saturating_sub(1);
            if state.pods == 0 {
                keys.remove(key);
                dropped = true;
            }
        }
    }
    dropped
}

impl Pod {
    fn push_is_fresh(&self, now: Duration, push_fresh: Duration) -> bool {
        self.push_connected
            && self
                .last_push
                .is_some_and(|t| now.saturating_sub(t) <= push_fresh)
    }
}

/// The shared, lock-protected aggregator plus a change signal.
#[derive(Debug)]
pub struct QueueState {
    origin: Instant,
    inner: Mutex<Aggregator>,
    changes: watch::Sender<u64>,
}

impl Default for QueueState {
    fn default() -> Self {
        Self::new()
    }
}

impl QueueState {
    /// An empty state whose clock starts now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            inner: Mutex::new(Aggregator::new()),
            changes: watch::Sender::new(0),
        }
    }

    /// Time since this state was created (the aggregator's clock).
    pub fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }

    /// Locks the aggregator. The lock is never held across an await or a network call.
    pub fn lock(&self) -> MutexGuard<'_, Aggregator> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes to change announcements (the value is a change counter).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Announces that the aggregate changed.
    pub fn announce(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use keda_http_api::queue::QueueCount;

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn counts(entries: &[(&str, i64, i64)]) -> QueueCounts {
        QueueCounts(
            entries
                .iter()
                .map(|(k, c, r)| {
                    (
                        (*k).to_owned(),
                        QueueCount {
                            concurrency: *c,
                            request_count: *r,
                        },
                    )
                })
                .collect(),
        )
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Polls every target with the given answers (None = unreachable).
    fn poll(agg: &mut Aggregator, now: Duration, answers: &[(u16, Option<QueueCounts>)]) {
        let targets = agg.poll_targets(now, Duration::ZERO);
        let results = targets
            .into_iter()
            .map(|target| PollResult {
                target,
                counts: answers
                    .iter()
                    .find(|(p, _)| addr(*p) == target.addr)
                    .and_then(|(_, c)| c.clone()),
            })
            .collect();
        agg.apply_poll(now, results);
        agg.end_cycle(now, Duration::ZERO);
    }

    fn pods(ports: &[u16]) -> BTreeSet<SocketAddr> {
        ports.iter().map(|p| addr(*p)).collect()
    }

    #[test]
    fn sums_concurrency_and_ignores_first_observation_for_rate() {
        let mut agg = Aggregator::new();
        agg.set_interceptors(&pods(&[1, 2]));
        poll(
            &mut agg,
            secs(0),
            &[
                (1, Some(counts(&[("ns/a", 2, 100)]))),
                (2, Some(counts(&[("ns/a", 3, 50), ("ns/b", 1, 1)]))),
            ],
        );
        assert_eq!(agg.concurrency("ns/a"), 5);
        assert_eq!(agg.concurrency("ns/b"), 1);
        assert_eq!(agg.total_concurrency(), 6);
        assert_eq!(agg.requests_seen("ns/a"), 0, "first observation counts 0");
        poll(
            &mut agg,
            secs(1),
            &[
                (1, Some(counts(&[("ns/a", 0, 104)]))),
                (2, Some(counts(&[("ns/a", 0, 56), ("ns/b", 0, 1)]))),
            ],
        );
        assert_eq!(agg.requests_seen("ns/a"), 10);
        assert_eq!(agg.concurrency("ns/a"), 0);
    }

    #[test]
    fn partial_failure_keeps_last_concurrency_of_unreachable_pod() {
        let mut agg = Aggregator::new();
        agg.set_interceptors(&pods(&[1, 2]));
        poll(
            &mut agg,
            secs(0),
            &[
                (1, Some(counts(&[("ns/a", 2, 10)]))),
                (2, Some(counts(&[("ns/a", 3, 10)]))),
            ],
        );
        poll(
            &mut agg,
            secs(1),
            &[(1, Some(counts(&[("ns/a", 1, 15)]))), (2, None)],
        );
        assert_eq!(agg.concurrency("ns/a"), 4, "1 live + 3 cached");
        assert_eq!(
            agg.requests_seen("ns/a"),
            5,
            "only the reachable pod's delta"
        );
        assert_eq!(agg.unreachable(), 1);
        assert_eq!(agg.last_contact(), Some(secs(1)));
        // Every pod fails: last contact stays where it was.
        poll(&mut agg, secs(2), &[(1, None), (2, None)]);
        assert_eq!(agg.last_contact(), Some(secs(1)));
        assert_eq!(agg.concurrency("ns/a"), 4);
    }

    #[test]
    fn pod_leaving_the_slice_is_pruned() {
        let mut agg = Aggregator::new();
        agg.set_interceptors(&pods(&[1, 2]));
        poll(
            &mut agg,
            secs(0),
            &[
                (1, Some(counts(&[("ns/a", 2, 10)]))),
                (2, Some(counts(&[("ns/a", 3, 10), ("ns/only2", 1, 1)]))),
            ],
        );
        agg.set_interceptors(&pods(&[1]));
        assert_eq!(agg.concurrency("ns/a"), 2);
        assert!(agg.key("ns/only2").is_none(), "keys of pruned pods go");
        assert_eq!(agg.endpoints(), 1);
        // Coming back, the pod's first snapshot counts 0 again.
        agg.set_interceptors(&pods(&[1, 2]));
        poll(
            &mut agg,
            secs(2),
            &[
                (1, Some(counts(&[("ns/a", 0, 10)]))),
                (2, Some(counts(&[("ns/a", 0, 90)]))),
            ],
        );
        assert_eq!(agg.requests_seen("ns/a"), 0);
    }

    #[test]
    fn counter_reset_counts_the_new_value() {
        let mut agg = Aggregator::new();
        agg.set_interceptors(&pods(&[1]));
        poll(&mut agg, secs(0), &[(1, Some(counts(&[("ns/a", 0, 500)])))]);
        poll(&mut agg, secs(1), &[(1, Some(counts(&[("ns/a", 0, 7)])))]);
        assert_eq!(agg.requests_seen("ns/a"), 7);
        // A key new on a known pod contributes 0.
        poll(
            &mut agg,
            secs(2),
            &[(1, Some(counts(&[("ns/a", 0, 7), ("ns/new", 0, 30)])))],
        );
        assert_eq!(agg.requests_seen("ns/new"), 0);
    }

    #[test]
    fn rate_follows_deltas_with_sub_second_buckets() {
        let mut agg = Aggregator::new();
        agg.set_interceptors(&pods(&[1]));
        let cfg = RateConfig::new(Some(secs(1)), Some(Duration::from_millis(100)));
        let mut total = 0;
        for i in 0..=20u64 {
            // 2 requests per 100 ms tick.
            poll(
                &mut agg,
                Duration::from_millis(i * 100),
                &[(1, Some(counts(&[("ns/a", 0, total)])))],
            );
            total += 2;
        }
        assert_eq!(agg.rate("ns/a", Duration::from_millis(2_000), cfg), 2.0);
        let per_second = RateConfig::new(Some(secs(1)), Some(secs(1)));
        // The one-second bucket 1.0 s .. 1.9 s holds 10 ticks of 2.
        assert_eq!(
            agg.rate("ns/a", Duration::from_millis(1_900), per_second),
            20.0
        );
        assert_eq!(agg.rate("ns/unknown", secs(2), cfg), 0.0);
    }

    #[test]
    fn incremental_sums_match_a_full_recount() {
        // A deterministic pseudo-random walk of snapshots, departures and returns.
        let mut seed: u64 = 0x5eed;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let mut agg = Aggregator::new();
        let mut latest: BTreeMap<u16, QueueCounts> = BTreeMap::new();
        let mut members: BTreeSet<u16> = [1, 2, 3].into_iter().collect();
        agg.set_interceptors(&members.iter().map(|p| addr(*p)).collect());
        for step in 0..2_000u64 {
            let now = Duration::from_millis(step * 10);
            if next(20) == 0 {
                // A pod leaves or comes back.
                let pod = 1 + u16::try_from(next(3)).expect("small");
                if !members.remove(&pod) {
                    members.insert(pod);
                }
                latest.remove(&pod);
                agg.set_interceptors(&members.iter().map(|p| addr(*p)).collect());
            } else if let Some(&pod) = members.iter().nth(usize::try_from(next(3)).expect("small"))
            {
                let mut entries = BTreeMap::new();
                for k in 0..5u64 {
                    if next(4) != 0 {
                        let concurrency = i64::try_from(next(4)).expect("small");
                        let request_count = i64::try_from(step).expect("small");
                        entries.insert(
                            format!("ns/k{k}"),
                            QueueCount {
                                concurrency,
                                request_count,
                            },
                        );
                    }
                }
                let snapshot = QueueCounts(entries);
                assert!(agg.apply_push(now, addr(pod), snapshot.clone()).is_some());
                latest.insert(pod, snapshot);
            }
            let mut expected: BTreeMap<&str, i64> = BTreeMap::new();
            for counts in latest.values() {
                for (key, count) in &counts.0 {
                    *expected.entry(key.as_str()).or_default() += count.concurrency;
                }
            }
            let got: BTreeMap<&str, i64> = agg.keys().map(|k| (k, agg.concurrency(k))).collect();
            assert_eq!(got, expected, "step {step}");
        }
    }

    #[test]
    fn push_updates_between_polls_and_stale_polls_are_ignored() {
        let mut agg = Aggregator::new();
        agg.set_interceptors(&pods(&[1]));
        poll(&mut agg, secs(0), &[(1, Some(counts(&[("ns/a", 0, 0)])))]);
        // A poll starts...
        let targets = agg.poll_targets(secs(1), Duration::ZERO);
        // ...a push arrives with a newer snapshot...
        assert_eq!(
            agg.apply_push(secs(1), addr(1), counts(&[("ns/a", 1, 1)])),
            Some(true)
        );
        assert_eq!(agg.concurrency("ns/a"), 1);
        assert_eq!(agg.requests_seen("ns/a"), 1);
        // ...and the poll answers with the older one: ignored, no false counter reset.
        agg.set_push_connected(addr(1), false);
        let results = targets
            .into_iter()
            .map(|target| PollResult {
                target,
                counts: Some(counts(&[("ns/a", 0, 0)])),
            })
            .collect();
        agg.apply_poll(secs(1), results);
        assert_eq!(agg.concurrency("ns/a"), 1);
        assert_eq!(agg.requests_seen("ns/a"), 1);
        // A fresh push stream means the pod is not polled...
        assert_eq!(
            agg.apply_push(secs(1), addr(1), counts(&[("ns/a", 1, 1)])),
            Some(true),
            "the stream connected"
        );
        assert_eq!(
            agg.apply_push(secs(1), addr(1), counts(&[("ns/a", 1, 1)])),
            Some(false),
            "same counts: nothing to announce"
        );
        assert!(agg.poll_targets(secs(1), secs(1)).is_empty());
        // ...and while it is connected, poll answers are not applied either.
        let targets = agg.poll_targets(secs(3), secs(1));
        let results = targets
            .into_iter()
            .map(|target| PollResult {
                target,
                counts: Some(counts(&[("ns/a", 0, 0)])),
            })
            .collect();
        let summary = agg.apply_poll(secs(3), results);
        assert!(!summary.changed);
        assert_eq!(agg.requests_seen("ns/a"), 1);
        assert!(agg.set_push_connected(addr(1), false));
        assert_eq!(agg.poll_targets(secs(1), secs(1)).len(), 1);
        // Pushes from pods outside the slice are ignored.
        assert_eq!(
            agg.apply_push(secs(1), addr(9), counts(&[("ns/a", 5, 5)])),
            None
        );
    }
}
