//! gRPC health (`grpc.health.v1.Health`) with the services `liveness` and `readiness` that the
//! chart's probes ask for (compat §4.4).
//!
//! Both are SERVING while some interceptor answered (a poll or a push) within the last two
//! poll ticks, and NOT_SERVING before the first answer, when every interceptor has been
//! unreachable (or none was listed) for more than two ticks, and from the start of shutdown.
//! The overall service `""` stays SERVING until shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// The liveness service name.
pub const LIVENESS: &str = "liveness";
/// The readiness service name.
pub const READINESS: &str = "readiness";

/// Whether the scaler counts as healthy: some interceptor answered within two ticks.
pub fn is_serving(last_contact: Option<Duration>, now: Duration, tick: Duration) -> bool {
    last_contact.is_some_and(|t| now.saturating_sub(t) <= tick.saturating_mul(2))
}

const UNSET: u8 = 0;
const SERVING: u8 = 1;
const NOT_SERVING: u8 = 2;

/// The health reporter of the scaler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    reporter: HealthReporter,
    current: Arc<AtomicU8>,
    closed: Arc<AtomicBool>,
}

impl Health {
    /// A reporter (both services NOT_SERVING until the first [`Health::set`]) and the gRPC
    /// service to mount.
    pub async fn new() -> (Self, HealthServer<HealthService>) {
        let reporter = HealthReporter::new();
        for service in [LIVENESS, READINESS] {
            reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        let server = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        (
            Self {
                reporter,
                current: Arc::new(AtomicU8::new(UNSET)),
                closed: Arc::new(AtomicBool::new(false)),
            },
            server,
        )
    }

    /// Sets `liveness` and `readiness` (only touches the reporter when the value changes).
    pub async fn set(&self, serving: bool) {
        let value = if serving { SERVING } else { NOT_SERVING };
        if self.closed.load(Ordering::Acquire)
            || self.current.swap(value, Ordering::AcqRel) == value
        {
            return;
        }
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if serving {
            tracing::info!("an interceptor answered: serving");
        } else {
            tracing::warn!("no interceptor answered for two ticks: not serving");
        }
        for service in [LIVENESS, READINESS] {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Shutdown: every service, including `""`, becomes NOT_SERVING for good.
    pub async fn shut_down(&self) {
        self.closed.store(true, Ordering::Release);
        self.current.store(NOT_SERVING, Ordering::Release);
        for service in ["", LIVENESS, READINESS] {
            self.reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_needs_an_answer_within_two_ticks() {
        let tick = Duration::from_millis(500);
        assert!(!is_serving(None, Duration::from_secs(5), tick));
        assert!(is_serving(
            Some(Duration::from_secs(4)),
            Duration::from_secs(5),
            tick
        ));
        assert!(!is_serving(
            Some(Duration::from_millis(3_999)),
            Duration::from_secs(5),
            tick
        ));
    }
}
