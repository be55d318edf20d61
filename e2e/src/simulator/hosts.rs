//! Test hosts: one network namespace per simulated pod, so that pods have routable addresses
//! that any conformant API server accepts in EndpointSlices (a real kube-apiserver refuses
//! loopback ones).
//!
//! ```text
//! root namespace: bridge kh-e2e0, 198.51.100.1/24 (the interceptor, scaler and harness)
//!   └─ veth khv-<n> ── khp-<n> in namespace khe-<pid>-<n>: 198.51.100.<n>/24, lo up
//! ```
//!
//! Addresses come only from 198.51.100.0/24 (TEST-NET-2, RFC 5737) and nothing routes out of
//! a test host (no default route), so all traffic stays on this machine. Hosts are allocated
//! across processes and parallel tests without collisions: address `<n>` belongs to whoever
//! created the lock file `/run/keda-http-e2e/hosts/<n>` (holding its pid); a lock whose pid is
//! gone is stale, and its namespace is deleted before the address is reused, so a crashed run
//! is cleaned up by the next one. A [`TestHost`] deletes its namespace (and with it the veth
//! pair) and its lock when dropped. The bridge is shared and stays (it holds no state).
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and `ip` from iproute2. Without them, set
//! `E2E_LOOPBACK_PODS=1` ([`ENV_LOOPBACK_PODS`]) to run pods on 127.0.0.1 instead; the local
//! API stand-in then accepts loopback slice addresses, which a real server does not.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Set to `1` to run simulated pods on 127.0.0.1 instead of in test hosts.
pub const ENV_LOOPBACK_PODS: &str = "E2E_LOOPBACK_PODS";
/// The bridge in the root namespace.
pub const BRIDGE: &str = "kh-e2e0";
/// The root namespace's address on the bridge: where pods reach the harness's processes.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PREFIX_LEN: u8 = 24;
const LOCK_DIR: &str = "/run/keda-http-e2e/hosts";
const NETNS_PREFIX: &str = "khe-";

/// Where simulated pods run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodNetwork {
    /// Each pod in its own test host on 198.51.100.0/24 (the default).
    TestHosts,
    /// Every pod on 127.0.0.1 (`E2E_LOOPBACK_PODS=1`).
    Loopback,
}

impl PodNetwork {
    /// `Loopback` when `E2E_LOOPBACK_PODS` is set to anything but `0` or empty.
    pub fn from_env() -> Self {
        match std::env::var(ENV_LOOPBACK_PODS).ok().as_deref() {
            None | Some("" | "0") => Self::TestHosts,
            Some(_) => Self::Loopback,
        }
    }

    /// The address the harness's own processes are reached at from pods and in the
    /// EndpointSlices it writes for them.
    pub fn harness_address(self) -> IpAddr {
        match self {
            Self::TestHosts => IpAddr::V4(GATEWAY),
            Self::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// Why a test host could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// An `ip` command failed.
    #[error(
        "`ip {args}` failed: {reason} (test hosts need root and iproute2; set E2E_LOOPBACK_PODS=1 to run pods on 127.0.0.1 instead)"
    )]
    Command {
        /// The arguments.
        args: String,
        /// Its stderr or the spawn error.
        reason: String,
    },
    /// The lock directory could not be used.
    #[error("test host locks in {dir}: {reason}")]
    Lock {
        /// The directory.
        dir: String,
        /// The I/O error.
        reason: String,
    },
    /// Every address of 198.51.100.2–254 is in use.
    #[error("no free test host address in 198.51.100.0/24")]
    Exhausted,
}

/// One network namespace with one address on the bridge.
#[derive(Debug)]
pub struct TestHost {
    netns: String,
    address: Ipv4Addr,
    lock: PathBuf,
}

impl TestHost {
    /// Creates a test host on a free address (setting the bridge up on first use).
    pub fn create() -> Result<Self, HostError> {
        prepare()?;
        for n in 2u8..=254 {
            let lock = Path::new(LOCK_DIR).join(n.to_string());
            if !claim(&lock, n)? {
                continue;
            }
            let netns = format!("{NETNS_PREFIX}{}-{n}", std::process::id());
            let host = Self {
                netns,
                address: Ipv4Addr::new(198, 51, 100, n),
                lock,
            };
            // On failure `host` is dropped, which removes what was set up and the lock.
            host.set_up(n)?;
            return Ok(host);
        }
        Err(HostError::Exhausted)
    }

    fn set_up(&self, n: u8) -> Result<(), HostError> {
        let (outer, inner) = (format!("khv-{n}"), format!("khp-{n}"));
        let cidr = format!("{}/{PREFIX_LEN}", self.address);
        let ns = self.netns.as_str();
        // A veth left behind by a crashed run would block the name.
        let _ = ip(&["link", "del", &outer]);
        ip(&["netns", "add", ns])?;
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ])?;
        ip(&["link", "set", &inner, "netns", ns])?;
        ip(&["link", "set", &outer, "master", BRIDGE, "up"])?;
        ip(&["-n", ns, "addr", "add", &cidr, "dev", &inner])?;
        ip(&["-n", ns, "link", "set", &inner, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The host's address.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The namespace name (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.netns
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth inside it, and so the pair.
        if let Err(error) = ip(&["netns", "del", &self.netns]) {
            tracing::debug!(%error, netns = %self.netns, "deleting a test host");
        }
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// Creates the bridge (once per process; idempotent across processes) and removes the
/// namespaces of runs that are gone.
pub fn prepare() -> Result<(), HostError> {
    static READY: OnceLock<Result<(), HostError>> = OnceLock::new();
    READY
        .get_or_init(|| {
            std::fs::create_dir_all(LOCK_DIR).map_err(|e| HostError::Lock {
                dir: LOCK_DIR.to_owned(),
                reason: e.to_string(),
            })?;
            remove_stale_namespaces();
            if !link_exists(BRIDGE) {
                // Another process may win the race; "File exists" is fine then.
                if let Err(error) = ip(&["link", "add", BRIDGE, "type", "bridge"])
                    && !link_exists(BRIDGE)
                {
                    return Err(error);
                }
            }
            let cidr = format!("{GATEWAY}/{PREFIX_LEN}");
            if !gateway_assigned()
                && let Err(error) = ip(&["addr", "add", &cidr, "dev", BRIDGE])
                && !gateway_assigned()
            {
                return Err(error);
            }
            ip(&["link", "set", BRIDGE, "up"])?;
            Ok(())
        })
        .clone()
}

fn gateway_assigned() -> bool {
    ip(&["-o", "-4", "addr", "show", "dev", BRIDGE])
        .is_ok_and(|out| out.contains(&format!(" {GATEWAY}/")))
}

fn link_exists(name: &str) -> bool {
    ip(&["link", "show", name]).is_ok()
}

/// Deletes `khe-<pid>-<n>` namespaces whose process is gone.
fn remove_stale_namespaces() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Takes the lock for address `n`; a stale lock (its process is gone) is cleaned up first.
fn claim(lock: &Path, n: u8) -> Result<bool, HostError> {
    let lock_error = |e: std::io::Error| HostError::Lock {
        dir: LOCK_DIR.to_owned(),
        reason: e.to_string(),
    };
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(lock)
        {
            Ok(mut file) => {
                write!(file, "{}", std::process::id()).map_err(lock_error)?;
                return Ok(true);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(lock)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                match owner {
                    Some(pid) if process_alive(pid) => return Ok(false),
                    Some(pid) => {
                        let _ = ip(&["netns", "del", &format!("{NETNS_PREFIX}{pid}-{n}")]);
                        let _ = ip(&["link", "del", &format!("khv-{n}")]);
                        let _ = std::fs::remove_file(lock);
                    }
                    // Being written by its creator right now.
                    None => return Ok(false),
                }
            }
            Err(e) => return Err(lock_error(e)),
        }
    }
    Ok(false)
}

/// Runs `ip <args>`, returning its stdout.
fn ip(args: &[&str]) -> Result<String, HostError> {
    let failed = |reason: String| HostError::Command {
        args: args.join(" "),
        reason,
    };
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_follows_the_opt_out_variable() {
        assert_eq!(PodNetwork::TestHosts.harness_address(), IpAddr::V4(GATEWAY));
        assert!(PodNetwork::Loopback.harness_address().is_loopback());
    }
}
