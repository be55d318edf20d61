//! The goals table on top of the report: per goal what the run measured for us and for the
//! in-run peer, their ratio, the goal and a verdict (`met`, `missed by N%`, or `not measured:
//! why`). Goals are judged, never asserted.

use serde::Serialize;

use crate::report::{self, Table};

/// How a measured value is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// CPU µs per request, two decimals.
    CpuMicros,
    /// A latency in µs (switching to ms at 10 ms).
    Latency,
    /// Bytes (switching to KiB at 10 KiB).
    Bytes,
    /// Nanoseconds.
    Nanos,
    /// Requests per second.
    Rps,
}

impl Unit {
    /// `value` in this unit.
    pub fn format(self, value: f64) -> String {
        if !value.is_finite() {
            return "–".to_owned();
        }
        match self {
            Self::CpuMicros => format!("{value:.2} µs"),
            Self::Latency => report::latency(Some(value)),
            Self::Bytes if value.abs() >= 10.0 * 1024.0 => format!("{:.1} KiB", value / 1024.0),
            Self::Bytes => format!("{value:.0} B"),
            Self::Nanos => format!("{value:.0} ns"),
            Self::Rps => format!("{value:.0}/s"),
        }
    }
}

/// What a goal compares.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Target {
    /// ours ÷ peer ≤ x.
    RatioAtMost(f64),
    /// ours ÷ peer ≥ x.
    RatioAtLeast(f64),
    /// ours ≤ x.
    AtMost(f64),
    /// ours ≤ x and ours below the peer's value in the same run.
    AtMostAndBelowPeer(f64),
}

/// One goal and what a run measured for it.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// What is measured.
    pub measure: String,
    /// The goal as people read it.
    pub goal: String,
    /// How values print.
    pub unit: Unit,
    /// How the verdict is reached.
    pub target: Target,
    /// Our value.
    pub ours: Option<f64>,
    /// The in-run peer's name and value.
    pub peer: Option<(String, f64)>,
    /// ours ÷ peer when measured otherwise (e.g. the median of per-repeat ratios); else
    /// computed from `ours` and `peer`.
    pub ratio: Option<f64>,
    /// Why something is missing, when it is.
    pub why_missing: Option<String>,
}

impl Goal {
    /// A goal with nothing measured yet.
    pub fn new(measure: &str, goal: &str, unit: Unit, target: Target) -> Self {
        Self {
            measure: measure.to_owned(),
            goal: goal.to_owned(),
            unit,
            target,
            ours: None,
            peer: None,
            ratio: None,
            why_missing: None,
        }
    }

    /// The ratio shown and judged: the given one, else ours ÷ peer (when the peer's value is
    /// positive).
    pub fn ratio(&self) -> Option<f64> {
        self.ratio.filter(|r| r.is_finite()).or_else(|| {
            let ours = self.ours?;
            let (_, peer) = self.peer.as_ref()?;
            (*peer > 0.0).then(|| ours / peer).filter(|r| r.is_finite())
        })
    }

    /// "ours 3.10 µs; nginx 2.00 µs".
    pub fn measured(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ours) = self.ours {
            parts.push(format!("ours {}", self.unit.format(ours)));
        }
        if let Some((name, value)) = &self.peer {
            parts.push(format!("{name} {}", self.unit.format(*value)));
        }
        if parts.is_empty() {
            "–".to_owned()
        } else {
            parts.join("; ")
        }
    }

    /// `met`, `missed by N%` or `not measured: why`.
    pub fn verdict(&self) -> String {
        let why = || {
            format!(
                "not measured: {}",
                self.why_missing
                    .as_deref()
                    .unwrap_or("no result in this run")
            )
        };
        match self.target {
            Target::RatioAtMost(goal) => self
                .ratio()
                .map_or_else(why, |r| report::verdict(Some(r), goal, true)),
            Target::RatioAtLeast(goal) => self
                .ratio()
                .map_or_else(why, |r| report::verdict(Some(r), goal, false)),
            Target::AtMost(goal) => self
                .ours
                .map_or_else(why, |v| report::verdict(Some(v), goal, true)),
            Target::AtMostAndBelowPeer(goal) => {
                let Some(ours) = self.ours else {
                    return why();
                };
                let peer = self.peer.as_ref().map(|(_, v)| *v);
                match peer {
                    // Below the peer is strict: equal to it is a miss (by 0%).
                    Some(p) if ours >= p && p <= goal => {
                        format!("missed by {:.0}%", pct_over(ours, p))
                    }
                    Some(_) => report::verdict(Some(ours), goal, true),
                    None => format!(
                        "{} (peer not measured: {})",
                        report::verdict(Some(ours), goal, true),
                        self.why_missing
                            .as_deref()
                            .unwrap_or("no result in this run")
                    ),
                }
            }
        }
    }
}

/// How far `value` is above `limit`, in percent of `limit` (0 for a zero limit).
fn pct_over(value: f64, limit: f64) -> f64 {
    if limit > 0.0 {
        (value - limit) / limit * 100.0
    } else {
        0.0
    }
}

/// The goals as a table: measure | measured | ratio | goal | verdict.
pub fn table(goals: &[Goal]) -> Table {
    let mut table = Table::new(&["measure", "measured", "ratio", "goal", "verdict"]);
    for g in goals {
        table.row(vec![
            g.measure.clone(),
            g.measured(),
            report::times(g.ratio()),
            g.goal.clone(),
            g.verdict(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(target: Target) -> Goal {
        Goal::new("m", "g", Unit::CpuMicros, target)
    }

    #[test]
    fn ratio_goals_use_the_given_ratio_before_the_quotient() {
        let mut g = goal(Target::RatioAtMost(1.0));
        g.ours = Some(3.0);
        g.peer = Some(("nginx".into(), 2.0));
        assert_eq!(g.ratio(), Some(1.5));
        assert_eq!(g.verdict(), "missed by 50%");
        g.ratio = Some(0.8);
        assert_eq!(g.verdict(), "met");
        assert_eq!(g.measured(), "ours 3.00 µs; nginx 2.00 µs");
    }

    #[test]
    fn at_least_goals_miss_from_below() {
        let mut g = goal(Target::RatioAtLeast(1.8));
        g.ours = Some(90.0);
        g.peer = Some(("1 worker".into(), 100.0));
        assert_eq!(g.verdict(), "missed by 50%");
        g.ours = Some(200.0);
        assert_eq!(g.verdict(), "met");
    }

    #[test]
    fn missing_values_say_why() {
        let mut g = goal(Target::RatioAtMost(1.0));
        assert_eq!(g.verdict(), "not measured: no result in this run");
        g.why_missing = Some("`nginx` is not installed".into());
        g.ours = Some(1.0);
        assert_eq!(g.verdict(), "not measured: `nginx` is not installed");
        assert_eq!(g.measured(), "ours 1.00 µs");
        // A peer at zero gives no ratio rather than infinity.
        g.peer = Some(("nginx".into(), 0.0));
        assert_eq!(g.ratio(), None);
    }

    #[test]
    fn absolute_and_peer_bound_goals() {
        let mut g = Goal::new(
            "held",
            "≤ 8 KiB",
            Unit::Bytes,
            Target::AtMostAndBelowPeer(8192.0),
        );
        g.ours = Some(4096.0);
        g.peer = Some(("nginx".into(), 10_240.0));
        assert_eq!(g.verdict(), "met");
        // Below the goal but above a frugal peer: missed against the peer's value.
        g.peer = Some(("nginx".into(), 2048.0));
        assert_eq!(g.verdict(), "missed by 100%");
        // Above the goal, peer not measured: judged on the goal alone and said so.
        g.peer = None;
        g.ours = Some(16_384.0);
        g.why_missing = Some("nginx missing".into());
        assert_eq!(
            g.verdict(),
            "missed by 100% (peer not measured: nginx missing)"
        );
        let mut a = Goal::new("routes", "≤ 2 KiB", Unit::Bytes, Target::AtMost(2048.0));
        a.ours = Some(1024.0);
        assert_eq!(a.verdict(), "met");
        assert_eq!(Unit::Bytes.format(31_000.0), "30.3 KiB");
        assert_eq!(Unit::Bytes.format(700.0), "700 B");
    }

    #[test]
    fn the_table_has_one_row_per_goal() {
        let mut g = goal(Target::RatioAtMost(1.0));
        g.ratio = Some(1.25);
        let t = table(&[g, goal(Target::AtMost(1.0))]);
        assert_eq!(
            t.columns,
            ["measure", "measured", "ratio", "goal", "verdict"]
        );
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0][2], "1.25×");
        assert_eq!(t.rows[0][4], "missed by 25%");
    }
}
