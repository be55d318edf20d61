//! Statistics over samples and repeats: percentiles, medians, ratios, CPU per request.
//!
//! Percentiles use the nearest-rank method on the sorted samples (no interpolation), so a
//! reported p99 is a latency that some request really had.

use serde::Serialize;

/// Latency samples in microseconds, kept whole (a 10 s open-loop run at 20k rps is 200k
/// samples, 1.6 MB: exact percentiles are cheaper than getting a histogram's bounds right).
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<u64>,
    sorted: bool,
}

impl Samples {
    /// No samples.
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            values: Vec::with_capacity(n),
            sorted: true,
        }
    }

    /// Adds one sample.
    pub fn push(&mut self, value_us: u64) {
        self.values.push(value_us);
        self.sorted = false;
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: &Self) {
        self.values.extend_from_slice(&other.values);
        self.sorted = false;
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.values.sort_unstable();
            self.sorted = true;
        }
    }

    /// The nearest-rank percentile `p` (0 < p ≤ 100), or `None` without samples.
    pub fn percentile(&mut self, p: f64) -> Option<u64> {
        self.sort();
        percentile_sorted(&self.values, p)
    }

    /// The usual summary.
    pub fn summary(&mut self) -> Option<LatencySummary> {
        self.sort();
        let v = &self.values;
        Some(LatencySummary {
            count: v.len(),
            p50_us: percentile_sorted(v, 50.0)?,
            p90_us: percentile_sorted(v, 90.0)?,
            p99_us: percentile_sorted(v, 99.0)?,
            p999_us: percentile_sorted(v, 99.9)?,
            max_us: *v.last()?,
        })
    }
}

/// Percentiles of one set of latency samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

/// Nearest-rank percentile of sorted values: the smallest value with at least `p`% of the
/// values at or below it.
pub fn percentile_sorted(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let n = sorted.len();
    // rank = ceil(p/100 * n), 1-based; computed in integers where possible to avoid
    // 99.0/100*100 = 98.99999 surprises.
    let scaled = (p * 1000.0).round() as u128 * n as u128;
    let rank = scaled.div_ceil(100_000).max(1) as usize;
    sorted.get(rank.min(n) - 1).copied()
}

/// Median of a few repeat values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Median, smallest and largest of the repeats of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median of the repeats.
    pub median: f64,
    /// Smallest repeat.
    pub min: f64,
    /// Largest repeat.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`, or `None` if none is finite.
    pub fn of(values: &[f64]) -> Option<Self> {
        let median = median(values)?;
        let finite = values.iter().copied().filter(|x| x.is_finite());
        let min = finite.clone().fold(f64::INFINITY, f64::min);
        let max = finite.fold(f64::NEG_INFINITY, f64::max);
        Some(Self { median, min, max })
    }

    /// Largest deviation from the median, relative to it (0.05 = ±5%).
    pub fn relative_range(&self) -> f64 {
        if self.median == 0.0 {
            return 0.0;
        }
        ((self.max - self.median).max(self.median - self.min)) / self.median
    }
}

/// `a / b`, or `None` when `b` is zero or either is not finite.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b != 0.0).then(|| a / b)
}

/// CPU microseconds per request from a process's utime+stime tick delta.
pub fn cpu_us_per_request(ticks: u64, ticks_per_second: u64, requests: u64) -> Option<f64> {
    if requests == 0 || ticks_per_second == 0 {
        return None;
    }
    let cpu_us = ticks as f64 * 1_000_000.0 / ticks_per_second as f64;
    Some(cpu_us / requests as f64)
}

/// The fraction of one core a process used: CPU tick delta over wall time.
pub fn core_share(ticks: u64, ticks_per_second: u64, wall_seconds: f64) -> Option<f64> {
    if ticks_per_second == 0 || wall_seconds <= 0.0 {
        return None;
    }
    Some(ticks as f64 / ticks_per_second as f64 / wall_seconds)
}

/// Growth from `first` to `last` relative to `first` (0.1 = +10%).
pub fn growth(first: f64, last: f64) -> Option<f64> {
    ratio(last - first, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_sorted(&v, 50.0), Some(50));
        assert_eq!(percentile_sorted(&v, 99.0), Some(99));
        assert_eq!(percentile_sorted(&v, 99.9), Some(100));
        assert_eq!(percentile_sorted(&v, 100.0), Some(100));
        assert_eq!(percentile_sorted(&v, 0.5), Some(1));
        assert_eq!(percentile_sorted(&[7], 99.0), Some(7));
        assert_eq!(percentile_sorted(&[], 50.0), None);
        assert_eq!(percentile_sorted(&v, 0.0), None);
        assert_eq!(percentile_sorted(&v, 101.0), None);
        // 1000 samples: p99 is the 990th, p99.9 the 999th.
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile_sorted(&v, 99.0), Some(990));
        assert_eq!(percentile_sorted(&v, 99.9), Some(999));
    }

    #[test]
    fn samples_sort_lazily_and_summarise() {
        let mut s = Samples::new();
        for v in [5, 1, 4, 2, 3] {
            s.push(v);
        }
        let summary = s.summary().expect("samples");
        assert_eq!(summary.count, 5);
        assert_eq!(summary.p50_us, 3);
        assert_eq!(summary.p99_us, 5);
        assert_eq!(summary.max_us, 5);
        let mut more = Samples::with_capacity(1);
        more.push(100);
        s.extend(&more);
        assert_eq!(s.percentile(100.0), Some(100));
        assert_eq!(s.len(), 6);
        assert!(Samples::new().summary().is_none());
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[]), None);
        let s = Spread::of(&[10.0, 12.0, 9.0]).expect("values");
        assert_eq!((s.median, s.min, s.max), (10.0, 9.0, 12.0));
        assert!((s.relative_range() - 0.2).abs() < 1e-9);
    }

    #[test]
    fn ratios_and_cpu_per_request() {
        assert_eq!(ratio(1.0, 2.0), Some(0.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        // 250 ticks at 100 Hz = 2.5 s of CPU over 100,000 requests = 25 µs each.
        assert_eq!(cpu_us_per_request(250, 100, 100_000), Some(25.0));
        assert_eq!(cpu_us_per_request(250, 100, 0), None);
        assert_eq!(core_share(500, 100, 10.0), Some(0.5));
        assert_eq!(growth(100.0, 110.0), Some(0.1));
    }
}
