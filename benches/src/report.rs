//! The report of a run: markdown tables for people, JSON for machines, both written to
//! `target/bench-results/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::procfs::Machine;

/// A table: a header row and rows of cells.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Table {
    /// Column titles.
    pub columns: Vec<String>,
    /// Rows (each as long as `columns`; shorter rows are padded when rendered).
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(columns: &[&str]) -> Self {
        Self {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// GitHub-flavoured markdown; `|` in cells is escaped.
    pub fn markdown(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|");
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| {} |",
            self.columns
                .iter()
                .map(|c| cell(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(out, "|{}", " --- |".repeat(self.columns.len()));
        for row in &self.rows {
            let mut cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
            cells.resize(self.columns.len(), String::new());
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

/// One suite's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// The table (may be empty when the suite was skipped).
    pub table: Table,
    /// Lines printed under the table (skips, goals, caveats).
    pub notes: Vec<String>,
    /// Raw measurements.
    pub data: serde_json::Value,
}

impl Section {
    /// An empty section.
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            table: Table::default(),
            notes: Vec::new(),
            data: serde_json::Value::Null,
        }
    }

    /// A section that only says why it was skipped.
    pub fn skipped(title: &str, why: &str) -> Self {
        let mut s = Self::new(title);
        s.notes.push(format!("skipped: {why}"));
        s
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// UTC start time (RFC 3339).
    pub started: String,
    /// Where it ran.
    pub machine: Machine,
    /// Load averages at the end.
    pub load_at_end: Option<[f64; 3]>,
    /// Settings that shaped the run (durations, repeats, connections).
    pub settings: serde_json::Value,
    /// The suites in order.
    pub sections: Vec<Section>,
}

impl Report {
    /// Markdown: a machine line, then each section with its table and notes.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let load = |l: Option<[f64; 3]>| {
            l.map_or_else(
                || "?".to_owned(),
                |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
            )
        };
        let _ = writeln!(
            out,
            "Run {} on {} × {} (Linux {}); load average at start {}, at end {}.\n",
            self.started,
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.kernel,
            load(self.machine.load_at_start),
            load(self.load_at_end),
        );
        for section in &self.sections {
            let _ = writeln!(out, "#### {}\n", section.title);
            if !section.table.columns.is_empty() {
                out.push_str(&section.table.markdown());
                out.push('\n');
            }
            for note in &section.notes {
                let _ = writeln!(out, "- {note}");
            }
            if !section.notes.is_empty() {
                out.push('\n');
            }
        }
        out
    }

    /// Writes `<stem>.json` and `<stem>.md`, and `latest.json`/`latest.md` copies, into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self)?;
        let md = self.markdown();
        let mut written = Vec::new();
        for name in [stem, "latest"] {
            let j = dir.join(format!("{name}.json"));
            std::fs::write(&j, &json)?;
            let m = dir.join(format!("{name}.md"));
            std::fs::write(&m, &md)?;
            written.extend([j, m]);
        }
        Ok(written)
    }
}

/// A number with `decimals` places, or `–` when absent or not finite.
pub fn num(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".to_owned(),
    }
}

/// A ratio as `0.83×`.
pub fn times(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.2}×"),
        _ => "–".to_owned(),
    }
}

/// A latency in µs, switching to ms at 10 ms.
pub fn latency(us: Option<f64>) -> String {
    match us {
        Some(v) if v.is_finite() && v.abs() >= 10_000.0 => format!("{:.1} ms", v / 1000.0),
        Some(v) if v.is_finite() => format!("{v:.0} µs"),
        _ => "–".to_owned(),
    }
}

/// A size in KiB as MiB with one decimal.
pub fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "–".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

/// A goal verdict: `met` or `missed by N%` (`lower_is_better` compares value ≤ goal).
pub fn verdict(value: Option<f64>, goal: f64, lower_is_better: bool) -> String {
    match value {
        Some(v) if v.is_finite() && goal != 0.0 => {
            let met = if lower_is_better {
                v <= goal
            } else {
                v >= goal
            };
            if met {
                "met".to_owned()
            } else {
                format!("missed by {:.0}%", ((v - goal) / goal).abs() * 100.0)
            }
        }
        _ => "not measured".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_tables_pad_and_escape() {
        let mut t = Table::new(&["peer", "rps"]);
        t.row(vec!["direct".into(), "100".into()]);
        t.row(vec!["a|b".into()]);
        assert_eq!(
            t.markdown(),
            "| peer | rps |\n| --- | --- |\n| direct | 100 |\n| a\\|b |  |\n"
        );
    }

    #[test]
    fn number_formats() {
        assert_eq!(num(Some(1.234), 1), "1.2");
        assert_eq!(num(None, 1), "–");
        assert_eq!(num(Some(f64::NAN), 1), "–");
        assert_eq!(times(Some(0.834)), "0.83×");
        assert_eq!(latency(Some(850.4)), "850 µs");
        assert_eq!(latency(Some(12_345.0)), "12.3 ms");
        assert_eq!(mib(Some(5120)), "5.0 MiB");
    }

    #[test]
    fn verdicts_say_by_how_much() {
        assert_eq!(verdict(Some(0.8), 0.9, true), "met");
        assert_eq!(verdict(Some(1.8), 0.9, true), "missed by 100%");
        assert_eq!(verdict(Some(150.0), 200.0, true), "met");
        assert_eq!(verdict(Some(3000.0), 4000.0, false), "missed by 25%");
        assert_eq!(verdict(None, 1.0, true), "not measured");
    }

    #[test]
    fn report_renders_and_writes() {
        let mut section = Section::new("Throughput");
        section.table = Table::new(&["peer"]);
        section.table.row(vec!["ours".into()]);
        let report = Report {
            started: "2026-11-27T23:00:00Z".into(),
            machine: Machine {
                cpus: 2,
                cpu_model: "Test CPU".into(),
                kernel: "6.1".into(),
                load_at_start: Some([1.0, 2.0, 3.0]),
            },
            load_at_end: None,
            settings: serde_json::json!({"seconds": 10}),
            sections: vec![section, Section::skipped("Cold start", "needs cold start")],
        };
        let md = report.markdown();
        assert!(md.contains("2 × Test CPU"));
        assert!(md.contains("load average at start 1.00 2.00 3.00, at end ?"));
        assert!(md.contains("#### Throughput\n\n| peer |"));
        assert!(md.contains("- skipped: needs cold start"));
        let dir = std::env::temp_dir().join(format!("bench-report-test-{}", std::process::id()));
        let files = report.write(&dir, "run").expect("written");
        assert_eq!(files.len(), 4);
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&files[0]).expect("read")).expect("json");
        assert_eq!(back["sections"][0]["title"], "Throughput");
        let _ = std::fs::remove_dir_all(dir);
    }
}
