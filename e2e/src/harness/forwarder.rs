//! A TCP forwarder in front of several interceptor processes: what the proxy Service's
//! kube-proxy is in a cluster. Each new connection goes to the next backend (round robin);
//! a backend that refuses the connection (stopped, restarting) is skipped, as kube-proxy
//! skips endpoints that are not ready. A backend can also be taken out of rotation before it
//! is stopped ([`Forwarder::set_ready`]), as a terminating endpoint is. Bytes are copied both
//! ways until either side closes.
//! Dropping the forwarder closes its listener and every connection it carries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

use super::Error;

/// The running forwarder.
pub struct Forwarder {
    ready: Arc<Vec<AtomicBool>>,
    _task: AbortOnDropHandle<()>,
}

impl Forwarder {
    /// Listens on `127.0.0.1:port` and forwards to `127.0.0.1:<backend>`.
    pub async fn start(port: u16, backends: Vec<u16>) -> Result<Self, Error> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(Error::Port)?;
        let ready: Arc<Vec<AtomicBool>> =
            Arc::new(backends.iter().map(|_| AtomicBool::new(true)).collect());
        let flags = ready.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the task drops them all.
            let mut connections = JoinSet::new();
            let mut next = 0usize;
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((inbound, _)) = accepted else { continue };
                        let start = next;
                        next = next.wrapping_add(1);
                        let backends = backends.clone();
                        connections.spawn(forward(inbound, backends, flags.clone(), start));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Self {
            ready,
            _task: AbortOnDropHandle::new(task),
        })
    }

    /// Puts backend `index` into (or takes it out of) rotation for new connections.
    pub fn set_ready(&self, index: usize, ready: bool) {
        if let Some(flag) = self.ready.get(index) {
            flag.store(ready, Ordering::SeqCst);
        }
    }
}

async fn forward(
    mut inbound: TcpStream,
    backends: Vec<u16>,
    ready: Arc<Vec<AtomicBool>>,
    start: usize,
) {
    let n = backends.len().max(1);
    for i in 0..n {
        let index = (start + i) % n;
        let Some(port) = backends.get(index) else {
            return;
        };
        if !ready.get(index).is_some_and(|r| r.load(Ordering::SeqCst)) {
            continue;
        }
        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", *port)).await {
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            return;
        }
    }
    // No backend accepts: close the client's connection, as a Service without ready
    // endpoints would refuse it.
}
