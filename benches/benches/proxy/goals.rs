//! The goals of issue 19 and what a run measured against them: the table on top of the
//! report, every goal as our value, the in-run peer's value and their ratio.

use std::collections::BTreeMap;

use keda_http_benches::goals::{self, Goal, Target, Unit};
use keda_http_benches::report::Section;

use super::{
    GOAL_ACTIVATION_US, GOAL_ADDED_P99_VS_NGINX, GOAL_CONN_BYTES, GOAL_CPU_VS_MINIMAL,
    GOAL_CPU_VS_NGINX, GOAL_HELD_BYTES, GOAL_LOOKUP_NS, GOAL_ROUTE_BYTES, GOAL_WAKE_VS_DIRECT,
    GOAL_WORKERS_RATIO, MINIMAL, NGINX, OURS, Settings,
};

/// What the suites measured for the goals table.
#[derive(Debug, Default)]
pub(crate) struct Goals {
    /// Median proxy CPU µs per request by peer.
    pub(crate) cpu_us: BTreeMap<&'static str, f64>,
    /// Medians of the per-repeat ratios of CPU per request.
    pub(crate) cpu_ratio_nginx: Option<f64>,
    pub(crate) cpu_ratio_minimal: Option<f64>,
    /// The fixed open-loop rate and the added p99 over direct there.
    pub(crate) low_rate: f64,
    pub(crate) added_p99_ours: Option<f64>,
    pub(crate) added_p99_nginx: Option<f64>,
    /// RSS bytes per held request (including its client connection).
    pub(crate) held_bytes_ours: Option<f64>,
    pub(crate) held_bytes_nginx: Option<f64>,
    /// RSS bytes per idle keep-alive client connection after one response.
    pub(crate) conn_bytes_ours: Option<f64>,
    pub(crate) conn_bytes_nginx: Option<f64>,
    /// RSS bytes per route over idle, and at how many routes.
    pub(crate) route_bytes: Option<f64>,
    pub(crate) routes: usize,
    /// Endpoint event → all 1,000 held requests at the backend, and the same client opening
    /// 1,000 fresh connections straight to the backend (µs, medians of rounds).
    pub(crate) wake_all_us: Option<f64>,
    pub(crate) wake_direct_us: Option<f64>,
    pub(crate) activation_us: Option<f64>,
    /// Slowest route lookup at 10,000 routes and its kind.
    pub(crate) lookup_ns: Option<f64>,
    pub(crate) lookup_kind: Option<String>,
    /// Our rps with 1 and 2 Tokio workers (unpinned), and the median per-repeat ratio.
    pub(crate) rps_1_worker: Option<f64>,
    pub(crate) rps_2_workers: Option<f64>,
    pub(crate) workers_ratio: Option<f64>,
    /// Why a peer is absent from this run.
    pub(crate) no_nginx: Option<String>,
    pub(crate) no_minimal: Option<String>,
    /// Why a suite gave no number, by suite.
    whys: BTreeMap<&'static str, String>,
}

impl Goals {
    /// Records why `suite` gave no number.
    pub(crate) fn why(&mut self, suite: &'static str, why: &str) {
        self.whys.entry(suite).or_insert_with(|| why.to_owned());
    }

    /// Why a goal of `suite` has no number: the suite not selected, the first reason
    /// recorded under one of `keys`, or a missing peer.
    fn why_missing(
        &self,
        settings: &Settings,
        suite: &str,
        keys: &[&str],
        peer: Option<&Option<String>>,
    ) -> String {
        if !settings.wants(suite) {
            return format!("suite `{suite}` not in BENCH_SUITES");
        }
        if let Some(why) = keys.iter().find_map(|k| self.whys.get(k)) {
            return why.clone();
        }
        if let Some(Some(why)) = peer {
            return why.clone();
        }
        "no result in this run".to_owned()
    }

    pub(crate) fn section(&self, settings: &Settings) -> Section {
        let peer = |name: &str, v: Option<f64>| v.map(|v| (name.to_owned(), v));
        let mut rows = Vec::new();

        let mut g = Goal::new(
            "proxy CPU per request vs nginx, same run",
            &format!("≤ {GOAL_CPU_VS_NGINX:.1}×"),
            Unit::CpuMicros,
            Target::RatioAtMost(GOAL_CPU_VS_NGINX),
        );
        g.ours = self.cpu_us.get(OURS).copied();
        g.peer = peer(NGINX, self.cpu_us.get(NGINX).copied());
        g.ratio = self.cpu_ratio_nginx;
        g.why_missing = Some(self.why_missing(
            settings,
            "throughput",
            &["throughput"],
            Some(&self.no_nginx),
        ));
        rows.push(g);

        let mut g = Goal::new(
            "proxy CPU per request vs a minimal hyper proxy, same run",
            &format!("≤ {GOAL_CPU_VS_MINIMAL:.1}×"),
            Unit::CpuMicros,
            Target::RatioAtMost(GOAL_CPU_VS_MINIMAL),
        );
        g.ours = self.cpu_us.get(OURS).copied();
        g.peer = peer(MINIMAL, self.cpu_us.get(MINIMAL).copied());
        g.ratio = self.cpu_ratio_minimal;
        g.why_missing = Some(self.why_missing(
            settings,
            "throughput",
            &["throughput"],
            Some(&self.no_minimal),
        ));
        rows.push(g);

        let mut g = Goal::new(
            &format!(
                "added p99 at a fixed {:.0}/s vs nginx's added p99",
                self.low_rate
            ),
            &format!("≤ {GOAL_ADDED_P99_VS_NGINX:.1}×"),
            Unit::Latency,
            Target::RatioAtMost(GOAL_ADDED_P99_VS_NGINX),
        );
        g.ours = self.added_p99_ours;
        g.peer = peer(NGINX, self.added_p99_nginx);
        g.why_missing = Some(match self.added_p99_nginx {
            Some(n) if n <= 0.0 && self.added_p99_ours.is_some() => {
                "nginx added no p99 over direct in this run (no ratio; noise)".to_owned()
            }
            _ => self.why_missing(settings, "latency", &["latency"], Some(&self.no_nginx)),
        });
        rows.push(g);

        let mut g = Goal::new(
            "RSS per held cold-start request (incl. its client connection)",
            "≤ 8 KiB and below nginx's in the same run",
            Unit::Bytes,
            Target::AtMostAndBelowPeer(GOAL_HELD_BYTES),
        );
        g.ours = self.held_bytes_ours;
        g.peer = peer(NGINX, self.held_bytes_nginx);
        g.why_missing = Some(self.why_missing(
            settings,
            "memory",
            &["held", "nginx_memory"],
            Some(&self.no_nginx),
        ));
        rows.push(g);

        let mut g = Goal::new(
            "RSS per idle keep-alive client connection after one response",
            "≤ 4 KiB",
            Unit::Bytes,
            Target::AtMost(GOAL_CONN_BYTES),
        );
        g.ours = self.conn_bytes_ours;
        g.peer = peer(NGINX, self.conn_bytes_nginx);
        g.why_missing = Some(self.why_missing(settings, "memory", &["conn"], None));
        rows.push(g);

        let mut g = Goal::new(
            &format!("RSS per route at {} routes", self.routes),
            "≤ 2 KiB",
            Unit::Bytes,
            Target::AtMost(GOAL_ROUTE_BYTES),
        );
        g.ours = self.route_bytes;
        g.why_missing = Some(if self.routes == 0 && settings.wants("memory") {
            "BENCH_ROUTES=0".to_owned()
        } else {
            self.why_missing(settings, "memory", &["routes"], None)
        });
        rows.push(g);

        let mut g = Goal::new(
            "wake of 1,000 held requests (event → all at the backend) vs the same client \
             opening 1,000 fresh connections straight to the backend",
            &format!("≤ {GOAL_WAKE_VS_DIRECT:.1}× the direct baseline"),
            Unit::Latency,
            Target::RatioAtMost(GOAL_WAKE_VS_DIRECT),
        );
        g.ours = self.wake_all_us;
        g.peer = peer("direct", self.wake_direct_us);
        g.why_missing = Some(self.why_missing(settings, "coldstart", &["coldstart"], None));
        rows.push(g);

        let mut g = Goal::new(
            "activation (first request → `StreamIsActive` true) p50",
            "≤ 1 ms",
            Unit::Latency,
            Target::AtMost(GOAL_ACTIVATION_US),
        );
        g.ours = self.activation_us;
        g.why_missing = Some(self.why_missing(settings, "activation", &["activation"], None));
        rows.push(g);

        let mut g = Goal::new(
            &format!(
                "route lookup at 10,000 routes, every kind incl. wildcard (slowest: {})",
                self.lookup_kind.as_deref().unwrap_or("–")
            ),
            "≤ 150 ns",
            Unit::Nanos,
            Target::AtMost(GOAL_LOOKUP_NS),
        );
        g.ours = self.lookup_ns;
        g.why_missing = Some(
            "no criterion results in target/criterion (run `cargo bench -p keda-http-benches \
             --bench micro`)"
                .to_owned(),
        );
        rows.push(g);

        let mut g = Goal::new(
            "throughput with 2 workers vs 1 worker (proxy unpinned)",
            &format!("≥ {GOAL_WORKERS_RATIO:.1}×"),
            Unit::Rps,
            Target::RatioAtLeast(GOAL_WORKERS_RATIO),
        );
        g.ours = self.rps_2_workers;
        g.peer = peer("1 worker", self.rps_1_worker);
        g.ratio = self.workers_ratio;
        g.why_missing = Some(self.why_missing(settings, "workers", &["workers"], None));
        rows.push(g);

        let mut section = Section::new("Goals (issue 19)");
        section.table = goals::table(&rows);
        section.notes.push(
            "measured: ours first, then the in-run peer the ratio divides by; CPU ratios are \
             medians of per-repeat ratios; ratios compare peers within this run; absolute \
             numbers from different runs (or a busy machine) are not comparable; a difference \
             under 10% is noise"
                .to_owned(),
        );
        section.data = serde_json::to_value(&rows).unwrap_or_default();
        section
    }
}
