//! Request rate over a sliding window of fixed-size buckets.
//!
//! The official scaler keeps a Knative-style ring of `ceil(window / granularity)` buckets per
//! route and indexes it by whole seconds, so a granularity below one second divides by zero
//! (compat §12 item 16), and changing a route's window or granularity throws its history
//! away. Here each route keeps the timestamped request-count deltas it saw for the longest
//! window asked of it, and the windowed average is computed for whatever window and granularity
//! a `GetMetrics` call asks for, in nanoseconds, so sub-second buckets work.
//!
//! The value keeps the official semantics: requests per *granularity* bucket, averaged over the
//! buckets of the window, ramping up over the buckets elapsed since the route was first seen,
//! 0 when nothing was recorded for a whole window, rounded to three decimals.

use std::collections::VecDeque;
use std::time::Duration;

/// The window used when a route does not configure one (or configures a non-positive one).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// The granularity used when a route does not configure one (or configures a non-positive one).
pub const DEFAULT_GRANULARITY: Duration = Duration::from_secs(1);
/// The longest history kept per route, whatever window is asked for (bounds memory).
pub const MAX_RETENTION: Duration = Duration::from_secs(60 * 60);

/// A window and a bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    window: Duration,
    granularity: Duration,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            granularity: DEFAULT_GRANULARITY,
        }
    }
}

impl RateConfig {
    /// A configuration; zero (unset) values fall back to 1m / 1s, the window is capped at
    /// [`MAX_RETENTION`] and the granularity at the window.
    pub fn new(window: Option<Duration>, granularity: Option<Duration>) -> Self {
        let window = window
            .filter(|w| !w.is_zero())
            .unwrap_or(DEFAULT_WINDOW)
            .min(MAX_RETENTION);
        let granularity = granularity
            .filter(|g| !g.is_zero())
            .unwrap_or(DEFAULT_GRANULARITY)
            .min(window);
        Self {
            window,
            granularity,
        }
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The bucket length.
    pub fn granularity(&self) -> Duration {
        self.granularity
    }

    /// Number of buckets in the window: `ceil(window / granularity)`, at least 1.
    fn buckets(&self) -> u128 {
        let g = self.granularity.as_nanos().max(1);
        self.window.as_nanos().div_ceil(g).max(1)
    }

    fn bucket_of(&self, at: Duration) -> u128 {
        at.as_nanos() / self.granularity.as_nanos().max(1)
    }
}

/// The request-count history of one route. Times are offsets from a fixed origin.
#[derive(Debug, Clone)]
pub struct RateHistory {
    /// First record since the history was last reset.
    first: Option<Duration>,
    /// Latest record.
    last: Option<Duration>,
    /// Non-zero deltas, oldest first.
    samples: VecDeque<(Duration, u64)>,
    /// How far back samples are kept (the longest window asked for).
    retention: Duration,
}

impl Default for RateHistory {
    fn default() -> Self {
        Self::new()
    }
}

impl RateHistory {
    /// An empty history that keeps [`DEFAULT_WINDOW`].
    pub fn new() -> Self {
        Self {
            first: None,
            last: None,
            samples: VecDeque::new(),
            retention: DEFAULT_WINDOW,
        }
    }

    /// Keeps enough history for `config`'s window from now on.
    pub fn retain_for(&mut self, config: RateConfig) {
        self.retention = self.retention.max(config.window);
    }

    /// Records `delta` requests at `at` (a zero delta still marks the route as observed).
    /// A gap of at least the retention since the previous record starts the history afresh.
    pub fn record(&mut self, at: Duration, delta: u64) {
        if let Some(last) = self.last
            && at.saturating_sub(last) >= self.retention
        {
            self.samples.clear();
            self.first = None;
        }
        if self.first.is_none() {
            self.first = Some(at);
        }
        self.last = Some(self.last.map_or(at, |last| last.max(at)));
        if delta > 0 {
            match self.samples.back_mut() {
                Some((t, d)) if *t == at => *d = d.saturating_add(delta),
                _ => self.samples.push_back((at, delta)),
            }
        }
        // Keep one extra window so that bucket alignment never cuts into the oldest bucket.
        let horizon = self.retention.saturating_mul(2);
        while let Some((t, _)) = self.samples.front() {
            if at.saturating_sub(*t) > horizon {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// The average number of requests per `config.granularity` over `config.window` ending
    /// at `now`, rounded to three decimals.
    pub fn window_average(&self, now: Duration, config: RateConfig) -> f64 {
        let (Some(first), Some(last)) = (self.first, self.last) else {
            return 0.0;
        };
        if now.saturating_sub(last) >= config.window {
            return 0.0;
        }
        let n = config.buckets();
        let now_bucket = config.bucket_of(now);
        let lowest = now_bucket.saturating_sub(n - 1);
        let total: u64 = self
            .samples
            .iter()
            .rev()
            .map(|(t, d)| (config.bucket_of(*t), *d))
            .skip_while(|(b, _)| *b > now_bucket)
            .take_while(|(b, _)| *b >= lowest)
            .map(|(_, d)| d)
            .fold(0u64, u64::saturating_add);
        let elapsed = now_bucket.saturating_sub(config.bucket_of(first)) + 1;
        let denominator = elapsed.min(n) as f64;
        round3(total as f64 / denominator)
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn defaults_replace_zero_values() {
        let c = RateConfig::new(Some(Duration::ZERO), None);
        assert_eq!(c, RateConfig::default());
        let c = RateConfig::new(Some(ms(500)), Some(ms(2000)));
        assert_eq!(
            c.granularity(),
            ms(500),
            "granularity is capped at the window"
        );
        assert_eq!(c.buckets(), 1);
    }

    #[test]
    fn one_second_buckets_average_over_the_window() {
        let cfg = RateConfig::new(Some(Duration::from_secs(10)), Some(Duration::from_secs(1)));
        let mut h = RateHistory::new();
        // 10 requests per second for 20 seconds, recorded every 500 ms.
        h.record(ms(0), 0);
        for i in 1..=41u64 {
            h.record(ms(i * 500), 5);
        }
        // Buckets 11..=20 hold the records from 11.0 s to 20.5 s: 20 x 5 = 100 requests.
        assert_eq!(h.window_average(ms(20_500), cfg), 10.0);
    }

    #[test]
    fn ramp_up_averages_over_elapsed_buckets() {
        let cfg = RateConfig::new(Some(Duration::from_secs(60)), Some(Duration::from_secs(1)));
        let mut h = RateHistory::new();
        h.record(ms(0), 0);
        h.record(ms(1_000), 6);
        // Two buckets elapsed (0 and 1), 6 requests: 3 per second.
        assert_eq!(h.window_average(ms(1_000), cfg), 3.0);
    }

    #[test]
    fn sub_second_granularity_works() {
        // 100 ms buckets over a 1 s window: the value is requests per 100 ms.
        let cfg = RateConfig::new(Some(Duration::from_secs(1)), Some(ms(100)));
        let mut h = RateHistory::new();
        h.record(ms(0), 0);
        // 20 requests per second, recorded every 50 ms (one per record).
        for i in 1..=61u64 {
            h.record(ms(i * 50), 1);
        }
        // Window = buckets 21..=30 (2.10 s .. 3.05 s): 20 records of 1 -> 2 per bucket.
        assert_eq!(h.window_average(ms(3_050), cfg), 2.0);
        // Records every 500 ms into 100 ms buckets: empty buckets count as zero.
        let mut h = RateHistory::new();
        h.record(ms(0), 0);
        for i in 1..=10u64 {
            h.record(ms(i * 500), 5);
        }
        // Buckets 41..=50 hold the records at 4.5 s and 5.0 s: 10 requests, 1 per 100 ms.
        assert_eq!(h.window_average(ms(5_000), cfg), 1.0);
    }

    #[test]
    fn quiet_for_a_window_is_zero_and_old_buckets_fall_out() {
        let cfg = RateConfig::new(Some(Duration::from_secs(2)), Some(Duration::from_secs(1)));
        let mut h = RateHistory::new();
        h.record(ms(0), 0);
        h.record(ms(1_000), 4);
        h.record(ms(2_000), 0);
        h.record(ms(3_000), 0);
        // Buckets 2 and 3: nothing left of the 4 requests of bucket 1.
        assert_eq!(h.window_average(ms(3_000), cfg), 0.0);
        // No record for a whole window.
        assert_eq!(h.window_average(ms(5_000), cfg), 0.0);
    }

    #[test]
    fn a_long_gap_resets_the_ramp_up() {
        let cfg = RateConfig::default();
        let mut h = RateHistory::new();
        h.record(ms(0), 0);
        h.record(ms(1_000), 60);
        // Silent for two minutes, then 2 requests: the history starts again.
        h.record(ms(121_000), 2);
        assert_eq!(h.window_average(ms(121_000), cfg), 2.0);
    }

    #[test]
    fn longer_windows_keep_more_history() {
        let long = RateConfig::new(Some(Duration::from_secs(300)), Some(Duration::from_secs(1)));
        let mut h = RateHistory::new();
        h.retain_for(long);
        h.record(ms(0), 0);
        h.record(ms(1_000), 300);
        for s in 2..=299u64 {
            h.record(ms(s * 1_000), 0);
        }
        // 300 requests over 300 one-second buckets.
        assert_eq!(h.window_average(ms(299_000), long), 1.0);
    }
}
