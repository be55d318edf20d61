//! The shutdown signal: SIGTERM or SIGINT, as one future.

/// Completes on the first SIGTERM or SIGINT. If the handlers cannot be installed it falls
/// back to Ctrl-C alone (and to never completing if even that fails), logging why.
pub async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (term, int) => {
            let error = term.err().or(int.err()).map(|e| e.to_string());
            tracing::warn!(
                ?error,
                "cannot listen for SIGTERM/SIGINT; using Ctrl-C only"
            );
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::warn!(%error, "cannot listen for Ctrl-C either");
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    #[tokio::test]
    async fn sigterm_completes_the_future() {
        let waiter = tokio::spawn(super::shutdown());
        // Let the handlers install before the signal is sent.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no signal was sent yet");
        kill(Pid::this(), Signal::SIGTERM).expect("send SIGTERM");
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the signal ends the wait")
            .expect("no panic");
    }
}
