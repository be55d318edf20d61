//! The process collector: the `process_*` series the Go Prometheus client exports by default
//! (compat §8), read from `/proc/self` on each scrape and registered into a binary's
//! prometheus-client [`Registry`] with [`register`].
//!
//! Linux only: elsewhere (or when `/proc` cannot be read) the series are simply absent, which a
//! scrape tolerates. CPU time and start time are in clock ticks in `/proc`; like the Go client
//! we take the tick as 1/100 s (`USER_HZ`, fixed at 100 on the architectures Linux ships).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// Registers the process collector in `registry`.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

/// Reads `/proc/self` on every scrape.
#[derive(Debug, Clone, Copy)]
pub struct ProcessCollector;

/// One reading of the process.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sample {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Start time since the Unix epoch, seconds.
    pub start_time_seconds: Option<f64>,
}

impl Sample {
    /// Reads the current process; a part that cannot be read is `None`.
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let stat_fields = stat.as_deref().and_then(stat_fields);
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| field_after(&s, "btime"));
        Self {
            cpu_seconds: stat_fields.map(|f| (f.utime + f.stime) as f64 / TICKS_PER_SECOND),
            resident_memory_bytes: kib_field(&status, "VmRSS:"),
            virtual_memory_bytes: kib_field(&status, "VmSize:"),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|s| max_open_files(&s)),
            start_time_seconds: stat_fields
                .zip(boot_time)
                .map(|(f, boot)| boot as f64 + f.start_ticks as f64 / TICKS_PER_SECOND),
        }
    }
}

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy)]
struct StatFields {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`: the command name (field 2) may hold spaces and parentheses, so
/// the fields are counted from its last `)`.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `name value` on its own line (as `btime` in `/proc/stat`).
fn field_after(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(name))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

/// A `Name:   123 kB` line of `/proc/<pid>/status`, in bytes.
fn kib_field(status: &str, name: &str) -> Option<u64> {
    field_after(status, name).map(|kib| kib * 1024)
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits` (`unlimited` is absent).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let sample = Sample::read();
        if let Some(v) = sample.cpu_seconds {
            let counter = ConstCounter::new(v);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let gauges: [(&str, &str, Option<f64>); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                sample.resident_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                sample.virtual_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                sample.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                sample.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                sample.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let gauge = ConstGauge::new(v);
                let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                gauge.encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat =
            "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 12345 1000 200";
        let f = stat_fields(stat).expect("parsed");
        assert_eq!((f.utime, f.stime, f.start_ticks), (250, 50, 12345));
    }

    #[test]
    fn limits_and_status_lines() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            kib_field("VmRSS:\t    2048 kB\n", "VmRSS:"),
            Some(2048 * 1024)
        );
        assert_eq!(
            field_after("cpu 1 2\nbtime 1700000000\n", "btime"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn registry_exports_the_go_client_process_series() {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for series in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(&format!("\n{series}")), "{series}\n{text}");
        }
        let sample = Sample::read();
        assert!(sample.resident_memory_bytes.unwrap_or(0) > 0, "{sample:?}");
        assert!(
            sample.start_time_seconds.unwrap_or(0.0) > 1.0e9,
            "{sample:?}"
        );
    }
}
