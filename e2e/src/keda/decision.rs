//! The scaling decisions of KEDA's scale executor and of the HorizontalPodAutoscaler, as pure
//! state machines over explicit time, so that they can be tested table by table.
//!
//! # The HPA formula for external metrics
//!
//! For each metric the HPA computes a proposal from the current replica count `r`, the metric
//! value `v` (the sum of the values the scaler returned) and the target `t`:
//!
//! - `AverageValue` (KEDA's default for external triggers): the usage ratio is
//!   `v / (t × r)`. If `|1 − ratio| ≤ tolerance` (0.1 by default) the proposal is `r`;
//!   otherwise it is `ceil(v / t)`.
//! - `Value`: the usage ratio is `v / t`; within the tolerance the proposal is `r`, otherwise
//!   `ceil(ratio × r)`. (The real HPA multiplies by the ready pod count; the stand-in uses `r`.)
//!
//! With several metrics the proposal is the largest one. The proposals of the last
//! *stabilization window* are remembered: a scale-up goes no higher than the smallest proposal
//! of the scale-up window and a scale-down goes no lower than the largest proposal of the
//! scale-down window (the HPA's `behavior` defaults are 0 s and 300 s). The result is clamped to
//! `[max(minReplicaCount, 1), maxReplicaCount]`, the bounds KEDA gives the HPA it creates. The
//! HPA's rate policies (at most +100 % or +4 pods per 15 s) are not modelled. At zero replicas
//! the HPA does nothing: scaling from and to zero is KEDA's job.
//!
//! # KEDA's scale executor
//!
//! On every activity result (a poll, or a message of the `StreamIsActive` stream):
//!
//! - below `minReplicaCount`: scale to `minReplicaCount`;
//! - active at zero replicas: scale to `max(minReplicaCount, 1)`;
//! - active: remember the time as the last active time;
//! - inactive with replicas above zero and `minReplicaCount` 0: scale to zero once the last
//!   active time is more than `cooldownPeriod` ago (or there never was one) *and* the object is
//!   older than `initialCooldownPeriod`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// KEDA's default `cooldownPeriod`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);
/// KEDA's default `maxReplicaCount`.
pub const DEFAULT_MAX_REPLICAS: i32 = 100;
/// The HPA's default tolerance.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// How the HPA reads a metric (the trigger's `metricType`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MetricTarget {
    /// The target is per replica: the value is divided by the replica count.
    AverageValue(f64),
    /// The target is for the metric as a whole.
    Value(f64),
}

/// One metric the HPA reads: the scaler's value against its target.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricReading {
    /// The metric name (as returned by `GetMetricSpec`).
    pub name: String,
    /// The target and how to apply it.
    pub target: MetricTarget,
    /// The value (sum of the values `GetMetrics` returned).
    pub value: f64,
}

/// The HPA's proposal for one metric, or `None` if the target is not positive.
pub fn hpa_proposal(reading: &MetricReading, current: i32, tolerance: f64) -> Option<i32> {
    let current_f = f64::from(current.max(0));
    match reading.target {
        MetricTarget::AverageValue(target) => {
            if target.is_nan() || target <= 0.0 {
                return None;
            }
            if current > 0 {
                let ratio = reading.value / (target * current_f);
                if (1.0 - ratio).abs() <= tolerance {
                    return Some(current);
                }
            }
            Some(ceil_to_i32(reading.value / target))
        }
        MetricTarget::Value(target) => {
            if target.is_nan() || target <= 0.0 {
                return None;
            }
            let ratio = reading.value / target;
            if current > 0 && (1.0 - ratio).abs() <= tolerance {
                return Some(current);
            }
            Some(ceil_to_i32(ratio * current_f))
        }
    }
}

/// `ceil(x)` as an `i32`, saturating; NaN and negatives give 0.
fn ceil_to_i32(x: f64) -> i32 {
    let c = x.ceil();
    if c.is_nan() || c <= 0.0 {
        0
    } else if c >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        // In range and integral, so the conversion is exact.
        c as i32
    }
}

/// Replica bounds of a ScaledObject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// `minReplicaCount` (KEDA default 0).
    pub min: i32,
    /// `maxReplicaCount` (KEDA default 100).
    pub max: i32,
}

impl Bounds {
    /// The bounds KEDA gives the HPA: `[max(min, 1), max]`.
    fn hpa(self) -> (i32, i32) {
        let lo = self.min.max(1);
        (lo, self.max.max(lo))
    }
}

/// HPA settings (the parts of `behavior` the stand-in models).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HpaConfig {
    /// Usage ratios within `1 ± tolerance` keep the replica count.
    pub tolerance: f64,
    /// Scale-up stabilization window (HPA default 0 s).
    pub scale_up_stabilization: Duration,
    /// Scale-down stabilization window (HPA default 300 s).
    pub scale_down_stabilization: Duration,
}

impl Default for HpaConfig {
    fn default() -> Self {
        Self {
            tolerance: DEFAULT_TOLERANCE,
            scale_up_stabilization: Duration::ZERO,
            scale_down_stabilization: Duration::from_secs(300),
        }
    }
}

/// The HPA of one ScaledObject: remembers its recent proposals for stabilization.
#[derive(Debug)]
pub struct Hpa {
    config: HpaConfig,
    recommendations: VecDeque<(Instant, i32)>,
}

impl Hpa {
    /// A new HPA with no history.
    pub fn new(config: HpaConfig) -> Self {
        Self {
            config,
            recommendations: VecDeque::new(),
        }
    }

    /// One HPA sync: the replica count to write, or `None` to leave the target alone (at zero
    /// replicas, without usable metrics, or when the result equals `current`).
    pub fn sync(
        &mut self,
        readings: &[MetricReading],
        current: i32,
        bounds: Bounds,
        now: Instant,
    ) -> Option<i32> {
        if current <= 0 {
            return None;
        }
        let proposal = readings
            .iter()
            .filter_map(|r| hpa_proposal(r, current, self.config.tolerance))
            .max()?;
        let stabilized = self.stabilize(proposal, current, now);
        let (lo, hi) = bounds.hpa();
        let desired = stabilized.clamp(lo, hi);
        (desired != current).then_some(desired)
    }

    fn stabilize(&mut self, proposal: i32, current: i32, now: Instant) -> i32 {
        let longest = self
            .config
            .scale_up_stabilization
            .max(self.config.scale_down_stabilization);
        while let Some(&(at, _)) = self.recommendations.front() {
            if now.saturating_duration_since(at) > longest {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
        let mut up = proposal;
        let mut down = proposal;
        for &(at, rec) in &self.recommendations {
            let age = now.saturating_duration_since(at);
            if age < self.config.scale_up_stabilization {
                up = up.min(rec);
            }
            if age < self.config.scale_down_stabilization {
                down = down.max(rec);
            }
        }
        self.recommendations.push_back((now, proposal));
        current.max(up).min(down)
    }
}

/// The scaling spec of a ScaledObject as KEDA's executor reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutorSpec {
    /// Replica bounds.
    pub bounds: Bounds,
    /// `cooldownPeriod`.
    pub cooldown: Duration,
    /// `initialCooldownPeriod`, counted from `created`.
    pub initial_cooldown: Duration,
}

/// KEDA's scale executor for one ScaledObject.
#[derive(Debug)]
pub struct Executor {
    spec: ExecutorSpec,
    created: Instant,
    last_active: Option<Instant>,
}

impl Executor {
    /// An executor for an object created at `created` that has never been active.
    pub fn new(spec: ExecutorSpec, created: Instant) -> Self {
        Self {
            spec,
            created,
            last_active: None,
        }
    }

    /// When a trigger was last active.
    pub fn last_active(&self) -> Option<Instant> {
        self.last_active
    }

    /// One activity result: the replica count to write, or `None` to leave the target alone.
    pub fn on_activity(&mut self, active: bool, current: i32, now: Instant) -> Option<i32> {
        let min = self.spec.bounds.min.max(0);
        if active {
            self.last_active = Some(now);
        }
        if current < min {
            return Some(min);
        }
        if active {
            return (current == 0).then_some(min.max(1));
        }
        if current > 0 && min == 0 {
            let cooled = self
                .last_active
                .is_none_or(|at| now.saturating_duration_since(at) > self.spec.cooldown);
            let initial_passed =
                now.saturating_duration_since(self.created) > self.spec.initial_cooldown;
            if cooled && initial_passed {
                return Some(0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
