//! The micro numbers: criterion's latest estimates of the `micro` bench target, read from
//! `target/criterion`.

use keda_http_benches::report::{self, Section, Table};
use keda_http_benches::{criterion_results, target_dir};

use super::{GOAL_LOOKUP_NS, Goals};

pub(crate) fn micro_section(goals: &mut Goals) -> Section {
    /// The criterion groups of `benches/micro.rs` (other crates' benches share the directory).
    const GROUPS: [&str; 4] = [
        "route_lookup/",
        "route_table_rebuild/",
        "counters/",
        "endpoint_pick/",
    ];
    let estimates: Vec<_> = criterion_results::load(&target_dir().join("criterion"))
        .into_iter()
        .filter(|e| GROUPS.iter().any(|g| e.id.starts_with(g)))
        .collect();
    if estimates.is_empty() {
        return Section::skipped(
            "Micro benchmarks (criterion)",
            "no criterion results in target/criterion (run `cargo bench -p keda-http-benches --bench micro`)",
        );
    }
    let mut table = Table::new(&["benchmark", "mean", "median"]);
    let fmt = |ns: f64| {
        if ns >= 1_000_000.0 {
            format!("{:.2} ms", ns / 1e6)
        } else if ns >= 10_000.0 {
            format!("{:.1} µs", ns / 1e3)
        } else {
            format!("{ns:.1} ns")
        }
    };
    let mut worst_lookup_10k: Option<f64> = None;
    for e in &estimates {
        if e.id.starts_with("route_lookup/")
            && e.id.ends_with("/10000")
            && worst_lookup_10k.is_none_or(|w| e.mean_ns > w)
        {
            worst_lookup_10k = Some(e.mean_ns);
            goals.lookup_kind = e.id.split('/').nth(1).map(str::to_owned);
        }
        table.row(vec![e.id.clone(), fmt(e.mean_ns), fmt(e.median_ns)]);
    }
    goals.lookup_ns = worst_lookup_10k;
    let mut section =
        Section::new("Micro benchmarks (criterion, latest results in target/criterion)");
    section.table = table;
    section.notes.push(format!(
        "route lookup at 10,000 routes, slowest kind: {} (goal ≤ {GOAL_LOOKUP_NS:.0} ns: {})",
        worst_lookup_10k.map_or_else(|| "–".into(), fmt),
        report::verdict(worst_lookup_10k, GOAL_LOOKUP_NS, true)
    ));
    section.data = serde_json::to_value(&estimates).unwrap_or_default();
    section
}
