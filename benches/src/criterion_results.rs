//! Reads criterion's saved estimates (`target/criterion/**/new/`) so that the micro-benchmark
//! numbers appear in the same report as the whole-system runs.

use std::path::Path;

use serde::Serialize;

/// One criterion benchmark's latest estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Full id, e.g. `route_lookup/exact_host/10000`.
    pub id: String,
    /// Mean time per iteration, ns.
    pub mean_ns: f64,
    /// Median time per iteration, ns.
    pub median_ns: f64,
}

/// Reads `estimates.json` text: the mean and median point estimates.
pub fn parse_estimates(text: &str) -> Option<(f64, f64)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some((
        v["mean"]["point_estimate"].as_f64()?,
        v["median"]["point_estimate"].as_f64()?,
    ))
}

/// Reads `benchmark.json` text: the full id.
pub fn parse_full_id(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v["full_id"].as_str().map(str::to_owned)
}

/// Every estimate under `root` (criterion's output directory), sorted by id.
pub fn load(root: &Path) -> Vec<Estimate> {
    let mut out = Vec::new();
    walk(root, &mut out, 0);
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn walk(dir: &Path, out: &mut Vec<Estimate>, depth: usize) {
    if depth > 6 {
        return;
    }
    let new = dir.join("new");
    if let (Ok(est), Ok(bench)) = (
        std::fs::read_to_string(new.join("estimates.json")),
        std::fs::read_to_string(new.join("benchmark.json")),
    ) && let (Some((mean_ns, median_ns)), Some(id)) =
        (parse_estimates(&est), parse_full_id(&bench))
    {
        out.push(Estimate {
            id,
            mean_ns,
            median_ns,
        });
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "new" && name != "base" && name != "change" && name != "report"
        {
            walk(&path, out, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_files() {
        let est = r#"{"mean":{"confidence_interval":{},"point_estimate":123.5,"standard_error":1.0},
                      "median":{"point_estimate":120.0}}"#;
        assert_eq!(parse_estimates(est), Some((123.5, 120.0)));
        assert_eq!(parse_estimates("{}"), None);
        assert_eq!(
            parse_full_id(r#"{"group_id":"g","full_id":"g/f/10"}"#),
            Some("g/f/10".to_owned())
        );
    }

    #[test]
    fn walks_a_tree() {
        let root =
            std::env::temp_dir().join(format!("bench-criterion-test-{}", std::process::id()));
        let new = root.join("g").join("f").join("10").join("new");
        std::fs::create_dir_all(&new).expect("dirs");
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":5.0},"median":{"point_estimate":4.0}}"#,
        )
        .expect("write");
        std::fs::write(new.join("benchmark.json"), r#"{"full_id":"g/f/10"}"#).expect("write");
        let found = load(&root);
        assert_eq!(
            found,
            vec![Estimate {
                id: "g/f/10".into(),
                mean_ns: 5.0,
                median_ns: 4.0
            }]
        );
        let _ = std::fs::remove_dir_all(root);
    }
}
