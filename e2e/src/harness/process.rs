//! Processes the harness starts: spawned with `kill_on_drop` (so a dropped harness or a
//! panicking test leaves nothing running) and stopped with `SIGTERM` and a grace period.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::Error;

/// A child process the harness owns.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
}

impl ManagedProcess {
    /// Spawns `program` with `args` and `env` (added to this process's environment).
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        inherit_output: bool,
    ) -> Result<Self, Error> {
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if !inherit_output {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command.spawn().map_err(|source| Error::Spawn {
            name: name.to_owned(),
            program: program.display().to_string(),
            source,
        })?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// The component name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// `Some(status)` if the process has exited.
    pub fn try_exit_status(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// `SIGTERM`, wait up to `grace`, then `SIGKILL`. Returns the exit status text.
    pub async fn stop(mut self, grace: Duration) -> String {
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok())
            && let Err(error) = kill(Pid::from_raw(pid), Signal::SIGTERM)
        {
            tracing::warn!(process = %self.name, %error, "SIGTERM failed");
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => {
                tracing::warn!(process = %self.name, "grace period over; killing");
                let _ = self.child.kill().await;
                "killed".to_owned()
            }
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::Port)?;
    Ok(listener.local_addr().map_err(Error::Port)?.port())
}

/// Waits until 127.0.0.1:`port` accepts connections, failing early if `process` exits.
pub async fn wait_listening(
    process: &mut ManagedProcess,
    port: u16,
    timeout: Duration,
) -> Result<(), Error> {
    let attempt = async {
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = process.try_exit_status() {
                return Err(Error::Exited {
                    name: process.name().to_owned(),
                    status,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Error::NotListening {
            name: process.name().to_owned(),
            port,
        })?
}
