//! What `/proc` says about a process and the machine: CPU ticks, resident memory, load,
//! CPU model.

use std::path::Path;

use serde::Serialize;

/// utime + stime of a process (all its threads), in clock ticks, from the text of
/// `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// utime + stime of process `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix("VmRSS:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_status_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The parent pid in the text of `/proc/<pid>/stat` (field 4, counted from the last `)`).
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The direct children of `pid` (scans `/proc`).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| parse_stat_ppid(&s))
                == Some(pid)
        })
        .collect()
}

/// Resident set size of `pid` plus its direct children (nginx: master + workers), in KiB.
pub fn rss_with_children_kib(pid: u32) -> Option<u64> {
    let own = rss_kib(pid)?;
    Some(own + children(pid).into_iter().filter_map(rss_kib).sum::<u64>())
}

/// How many file descriptors `pid` has open.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The hard limit on open files in a `/proc/PID/limits` text (`None` when unlimited or absent).
pub fn parse_limits_hard_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

/// This process's hard limit on open files; child processes (nginx) cannot go above it.
pub fn hard_nofile() -> Option<u64> {
    parse_limits_hard_nofile(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we run on).
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The 1, 5 and 15 minute load averages from the text of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The current load averages.
pub fn loadavg() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// The first `model name` of `/proc/cpuinfo` text.
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Online CPUs (`nproc`).
    pub cpus: usize,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Load averages when the run started.
    pub load_at_start: Option<[f64; 3]>,
}

impl Machine {
    /// Reads the machine's description now.
    pub fn describe() -> Self {
        let read = |p: &str| std::fs::read_to_string(Path::new(p)).unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: parse_cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| "unknown".into()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_at_start: loadavg(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hard_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 20000                files     \n";
        assert_eq!(parse_limits_hard_nofile(limits), Some(20_000));
        let unlimited =
            "Max open files            1024                 unlimited            files\n";
        assert_eq!(parse_limits_hard_nofile(unlimited), None);
    }

    #[test]
    fn stat_cpu_ticks_count_from_the_last_parenthesis() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    150 37 0 0 20 0 3 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(187));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t2\n";
        assert_eq!(parse_status_rss_kib(status), Some(5120));
        assert_eq!(parse_status_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn loadavg_and_cpu_model() {
        assert_eq!(
            parse_loadavg("2.06 2.11 1.28 3/345 12345\n"),
            Some([2.06, 2.11, 1.28])
        );
        assert_eq!(parse_loadavg("x"), None);
        assert_eq!(
            parse_cpu_model("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t: x\n"),
            Some("AMD EPYC".to_owned())
        );
    }

    #[test]
    fn this_process_is_visible() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(ticks_per_second() > 0);
        assert!(open_fds(pid).is_some_and(|n| n >= 3));
        assert!(rss_with_children_kib(pid).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn stat_parent_pid() {
        assert_eq!(parse_stat_ppid("4242 (a) b) S 17 4242 0"), Some(17));
        assert_eq!(parse_stat_ppid("garbage"), None);
    }

    #[test]
    fn children_are_found_and_counted() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts");
        let found = children(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()));
    }
}
