//! Child processes the suites start: pinned to a core, killed when their guard drops (also on
//! error and panic), and probed until they answer.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Which CPUs the pieces of a run use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cores {
    /// The proxy under test.
    pub proxy: usize,
    /// The load generator and the backend.
    pub load: usize,
}

impl Cores {
    /// Proxy on CPU 0, everything else on CPU 1: the layout of a 2-core box. With one CPU both
    /// are 0 (pinning then only keeps the processes off each other's caches, not each other's
    /// time).
    pub fn split(cpus: usize) -> Self {
        Self {
            proxy: 0,
            load: usize::from(cpus > 1),
        }
    }
}

/// Whether `taskset` exists.
pub fn have_taskset() -> bool {
    which("taskset").is_some()
}

/// The path of `program` on `PATH` (also `/usr/sbin`, where nginx lives), if any.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A command for `program`, run under `taskset -c <cpu>` when `cpu` is given and taskset
/// exists.
pub fn pinned(program: impl AsRef<Path>, cpu: Option<usize>) -> Command {
    match cpu.filter(|_| have_taskset()) {
        Some(cpu) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpu.to_string()).arg(program.as_ref());
            cmd
        }
        None => Command::new(program.as_ref()),
    }
}

/// The kernel thread id of the calling thread (from the `/proc/thread-self` link,
/// `<pid>/task/<tid>`).
pub fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    parse_thread_self(&link.to_string_lossy())
}

/// The tid in a `/proc/thread-self` link target.
pub fn parse_thread_self(link: &str) -> Option<u32> {
    let (_, tid) = link.rsplit_once("/task/")?;
    tid.parse().ok()
}

/// Moves the calling thread (only it) to `cpu` with `taskset -p`; false when that is not
/// possible (no taskset, no such CPU).
pub fn pin_current_thread(cpu: usize) -> bool {
    let Some(tid) = current_tid() else {
        return false;
    };
    have_taskset()
        && Command::new("taskset")
            .args(["-p", "-c", &cpu.to_string(), &tid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A running child that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout/stderr sent to `log` (or discarded).
    pub fn spawn(name: &str, mut cmd: Command, log: Option<&Path>) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null());
        match log {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("create {}", path.display()))?;
                cmd.stdout(file.try_clone()?).stderr(file);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().with_context(|| format!("start {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// The process id (with taskset, taskset execs the program, so the id is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound and released; another process could take it in between, which
/// on a bench box does not happen in practice).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One blocking HTTP/1.1 GET with `Connection: close`; the status code.
pub fn http_status(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        match stream.read(&mut head[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    parse_status_line(&head[..filled])
}

/// The status code of an HTTP/1.x status line.
pub fn parse_status_line(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head.get(..12)?).ok()?;
    if !text.starts_with("HTTP/1.") {
        return None;
    }
    text.get(9..12)?.parse().ok()
}

/// Waits until `GET path` on `addr` answers `want`, the process is still alive, or `timeout`
/// passes.
pub fn wait_status(
    proc: &mut Proc,
    addr: SocketAddr,
    host: &str,
    path: &str,
    want: u16,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        proc.check_alive()?;
        if http_status(addr, host, path, Duration::from_millis(500)) == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer {want} on http://{addr}{path} within {timeout:?}",
                proc.name()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-x"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1"), None);
    }

    #[test]
    fn thread_ids() {
        assert_eq!(parse_thread_self("4242/task/4250"), Some(4250));
        assert_eq!(parse_thread_self("self"), None);
        assert!(current_tid().is_some());
    }

    #[test]
    fn core_layout() {
        assert_eq!(Cores::split(2), Cores { proxy: 0, load: 1 });
        assert_eq!(Cores::split(8), Cores { proxy: 0, load: 1 });
        assert_eq!(Cores::split(1), Cores { proxy: 0, load: 0 });
    }

    #[test]
    fn guard_kills_on_drop() {
        let proc = Proc::spawn(
            "sleep",
            {
                let mut c = Command::new("sleep");
                c.arg("30");
                c
            },
            None,
        )
        .expect("sleep starts");
        let pid = proc.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(proc);
        // Reaped: the pid is gone (or reused by something that is not our sleep).
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_ne!(comm.trim(), "sleep");
    }
}
