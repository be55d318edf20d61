//! One simulated pod: a process in its own test host (network namespace, see `hosts`) on
//! port 8080, or with `E2E_LOOPBACK_PODS=1` on a free loopback port; started after a delay,
//! probed for readiness, restarted when it dies, and stopped with `SIGTERM` and a grace
//! period. The child gets `PORT` and `BIND_ADDRESS` (the host's address) and is spawned with
//! `kill_on_drop`, so aborting the pod's task kills it (and drops its test host).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use super::hosts::{PodNetwork, TestHost};

/// The port a pod in a test host listens on (each host has its own address).
pub const TEST_HOST_PORT: u16 = 8080;

/// What to run for a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment (after the pod template's literal env; `PORT` is always set last).
    pub env: Vec<(String, String)>,
}

impl CommandSpec {
    /// A command without arguments or extra environment.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Parses a whitespace-separated command line (no quoting), e.g. from an annotation.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        let program = words.next()?;
        Some(Self {
            program: program.into(),
            args: words.map(str::to_owned).collect(),
            env: Vec::new(),
        })
    }
}

/// How a pod checks readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `GET <path>` answers 2xx or 3xx (the template's `readinessProbe.httpGet`).
    Http(String),
    /// The port accepts connections (no readiness probe in the template).
    Tcp,
}

/// Everything a pod needs to run.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// Pod name (for logs and events).
    pub name: String,
    /// The command.
    pub command: CommandSpec,
    /// The template's literal env values.
    pub template_env: Vec<(String, String)>,
    /// Readiness check.
    pub probe: Probe,
    /// Delay before each (re)start: image pull and boot.
    pub start_delay: Duration,
    /// Between probes.
    pub probe_period: Duration,
    /// `SIGTERM` → `SIGKILL`.
    pub grace_period: Duration,
    /// After an unexpected exit, before the restart's start delay.
    pub restart_delay: Duration,
    /// Let the child write to our stdout/stderr (otherwise discarded).
    pub inherit_output: bool,
    /// Test host or loopback.
    pub network: PodNetwork,
}

/// What a pod reports to the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodEvent {
    /// The process was spawned and listens (or will) on this address; not ready yet.
    Started(SocketAddr),
    /// The readiness probe result changed.
    Ready(bool),
    /// The process exited without being asked to; it will be restarted.
    Exited(String),
    /// The pod is gone (after a requested stop).
    Gone,
}

/// Runs a pod until `stop` fires (or the sender is dropped), reporting through `events`.
pub async fn run(
    spec: PodSpec,
    events: mpsc::UnboundedSender<(String, PodEvent)>,
    mut stop: oneshot::Receiver<()>,
) {
    let send = |event: PodEvent| {
        let _ = events.send((spec.name.clone(), event));
    };
    // Kept across restarts, as a pod keeps its IP; dropped (namespace deleted) at the end.
    let mut host: Option<TestHost> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(spec.start_delay) => {}
            _ = &mut stop => break,
        }
        if spec.network == PodNetwork::TestHosts && host.is_none() {
            match tokio::task::spawn_blocking(TestHost::create).await {
                Ok(Ok(created)) => host = Some(created),
                Ok(Err(error)) => {
                    tracing::error!(pod = %spec.name, %error, "creating the pod's test host failed");
                    send(PodEvent::Exited(error.to_string()));
                }
                Err(error) => send(PodEvent::Exited(error.to_string())),
            }
            if host.is_none() {
                tokio::select! {
                    () = tokio::time::sleep(spec.restart_delay) => continue,
                    _ = &mut stop => break,
                }
            }
        }
        let started = match &host {
            Some(h) => {
                let addr = SocketAddr::from((h.address(), TEST_HOST_PORT));
                spawn(&spec, addr, Some(h.netns())).map(|child| (addr, child))
            }
            None => free_port()
                .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .and_then(|addr| spawn(&spec, addr, None).map(|child| (addr, child))),
        };
        let (addr, mut child) = match started {
            Ok(started) => started,
            Err(error) => {
                tracing::warn!(pod = %spec.name, %error, "starting the pod's process failed");
                send(PodEvent::Exited(error.to_string()));
                tokio::select! {
                    () = tokio::time::sleep(spec.restart_delay) => continue,
                    _ = &mut stop => break,
                }
            }
        };
        send(PodEvent::Started(addr));
        let mut ready = false;
        let mut probe = tokio::time::interval(spec.probe_period.max(Duration::from_millis(1)));
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = loop {
            tokio::select! {
                status = child.wait() => {
                    let why = match status {
                        Ok(status) => status.to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::info!(pod = %spec.name, %why, "pod process exited; restarting");
                    send(PodEvent::Exited(why));
                    break false;
                }
                _ = probe.tick() => {
                    let ok = check(&spec.probe, addr).await;
                    if ok != ready {
                        ready = ok;
                        send(PodEvent::Ready(ok));
                    }
                }
                _ = &mut stop => {
                    terminate(&mut child, spec.grace_period, &spec.name).await;
                    break true;
                }
            }
        };
        if stopped {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(spec.restart_delay) => {}
            _ = &mut stop => break,
        }
    }
    send(PodEvent::Gone);
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Spawns the pod's process listening on `addr`, inside `netns` when given
/// (`ip netns exec` execs the program, so the child is the program itself).
fn spawn(spec: &PodSpec, addr: SocketAddr, netns: Option<&str>) -> std::io::Result<Child> {
    let mut command = match netns {
        Some(netns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns]).arg(&spec.command.program);
            c
        }
        None => Command::new(&spec.command.program),
    };
    command
        .args(&spec.command.args)
        .envs(spec.template_env.iter().map(|(k, v)| (k, v)))
        .envs(spec.command.env.iter().map(|(k, v)| (k, v)))
        .env("PORT", addr.port().to_string())
        .env("BIND_ADDRESS", addr.ip().to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if !spec.inherit_output {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    }
    command.spawn()
}

/// `SIGTERM`, then wait up to `grace`, then `SIGKILL`.
async fn terminate(child: &mut Child, grace: Duration, name: &str) {
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok())
        && let Err(error) = kill(Pid::from_raw(pid), Signal::SIGTERM)
    {
        tracing::warn!(pod = %name, %error, "SIGTERM failed");
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            tracing::warn!(pod = %name, "grace period over; killing");
            let _ = child.kill().await;
        }
    }
}

/// One readiness check, bounded by one second.
async fn check(probe: &Probe, addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let Probe::Http(path) = probe else {
            return Some(true);
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/e2e\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 16];
        let mut read = 0;
        while read < 12 {
            let n = stream.read(&mut head[read..]).await.ok()?;
            if n == 0 {
                break;
            }
            read += n;
        }
        let status = std::str::from_utf8(head.get(9..12)?).ok()?;
        let code: u16 = status.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_on_whitespace() {
        let spec = CommandSpec::parse("  /bin/hello --delay 5 ").unwrap();
        assert_eq!(spec.program, PathBuf::from("/bin/hello"));
        assert_eq!(spec.args, ["--delay", "5"]);
        assert!(CommandSpec::parse("   ").is_none());
    }

    #[tokio::test]
    async fn http_probe_reads_the_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                s.write_all(response.as_bytes()).await.unwrap();
            }
        });
        let probe = Probe::Http("/healthz".into());
        assert!(check(&probe, port).await);
        assert!(!check(&probe, port).await);
        server.await.unwrap();
        // Nobody listens any more.
        assert!(!check(&Probe::Tcp, port).await);
    }
}
