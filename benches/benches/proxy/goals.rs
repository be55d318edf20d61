//! The goals of the issue and what a run measured against them: the summary section on top
//! of the report.

use keda_http_benches::report::{self, Section, Table};

use super::{
    GOAL_ACTIVATION_US, GOAL_ADDED_P99_US, GOAL_CPU_RATIO, GOAL_HELD_BYTES, GOAL_IDLE_RSS_KIB,
    GOAL_LOOKUP_NS, GOAL_WAKE_P99_US,
};

/// The goals of the issue and what this run measured against them.
#[derive(Debug, Default)]
pub(crate) struct Goals {
    pub(crate) cpu_ratio: Option<f64>,
    pub(crate) added_p99_us: Option<f64>,
    pub(crate) latency_overloaded: bool,
    pub(crate) added_p99_low_us: Option<f64>,
    pub(crate) low_rate: f64,
    pub(crate) wake_p99_us: Option<f64>,
    pub(crate) wake_detail: Option<String>,
    pub(crate) activation_us: Option<f64>,
    pub(crate) lookup_10k_ns: Option<f64>,
    pub(crate) idle_rss_kib: Option<u64>,
    pub(crate) held_bytes: Option<f64>,
}

impl Goals {
    pub(crate) fn section(&self) -> Section {
        let mut table = Table::new(&["goal", "measured", "verdict"]);
        let low_goal = if self.low_rate > 0.0 {
            format!("added p99 at a fixed {:.0}/s ≤ 0.3 ms", self.low_rate)
        } else {
            "added p99 at a fixed modest rate ≤ 0.3 ms".to_owned()
        };
        let rows: [(&str, String, String); 8] = [
            (
                "proxy CPU per request ≤ 0.9 × nginx's",
                report::times(self.cpu_ratio),
                report::verdict(self.cpu_ratio, GOAL_CPU_RATIO, true),
            ),
            (
                "added p99 at half load ≤ 0.3 ms",
                report::latency(self.added_p99_us),
                if self.latency_overloaded {
                    "not judged: overloaded (see below)".to_owned()
                } else {
                    report::verdict(self.added_p99_us, GOAL_ADDED_P99_US, true)
                },
            ),
            (
                &low_goal,
                report::latency(self.added_p99_low_us),
                report::verdict(self.added_p99_low_us, GOAL_ADDED_P99_US, true),
            ),
            (
                "wake ≤ 2 ms p99 after the endpoint event (worst level)",
                self.wake_detail
                    .clone()
                    .unwrap_or_else(|| report::latency(self.wake_p99_us)),
                report::verdict(self.wake_p99_us, GOAL_WAKE_P99_US, true),
            ),
            (
                "activation ≤ 20 ms (p50)",
                report::latency(self.activation_us),
                report::verdict(self.activation_us, GOAL_ACTIVATION_US, true),
            ),
            (
                "route lookup ≤ 200 ns at 10,000 routes (slowest kind)",
                self.lookup_10k_ns
                    .map_or_else(|| "–".into(), |ns| format!("{ns:.0} ns")),
                report::verdict(self.lookup_10k_ns, GOAL_LOOKUP_NS, true),
            ),
            (
                "RSS ≤ 16 MiB idle",
                report::mib(self.idle_rss_kib),
                report::verdict(
                    self.idle_rss_kib.map(|k| k as f64),
                    GOAL_IDLE_RSS_KIB as f64,
                    true,
                ),
            ),
            (
                "≤ 2 KiB per held request",
                self.held_bytes
                    .map_or_else(|| "–".into(), |b| format!("{b:.0} B")),
                report::verdict(self.held_bytes, GOAL_HELD_BYTES, true),
            ),
        ];
        for (goal, measured, verdict) in rows {
            table.row(vec![goal.to_owned(), measured, verdict]);
        }
        let mut section = Section::new("Goals (issue 11)");
        section.table = table;
        section.notes.push(
            "ratios compare peers within this run; absolute numbers from different runs (or a \
             busy machine) are not comparable; a difference under 10% is noise"
                .to_owned(),
        );
        section
    }
}
