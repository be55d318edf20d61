//! Prometheus metrics, named as controller-runtime names them so existing dashboards keep
//! working: reconcile counts by result, reconcile errors, reconcile duration, and whether this
//! replica is the leader.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set `{controller}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `httpscaledobject` or `interceptorroute`.
    pub controller: String,
}

/// Label set `{controller, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `httpscaledobject` or `interceptorroute`.
    pub controller: String,
    /// `success` or `error`.
    pub result: String,
}

/// Label set `{name}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    /// Lease name.
    pub name: String,
}

/// How one reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Returned an action.
    Success,
    /// Returned an error (requeued with backoff).
    Error,
}

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ControllerLabels, Counter>,
    durations: Family<ControllerLabels, Histogram>,
    leader: Family<LeaseLabels, Gauge>,
    invalid: keda_http_runtime::watch::InvalidObjects,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        keda_http_runtime::process::register(&mut registry);
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ControllerLabels, Counter>::default();
        let durations = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6,
                0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0,
                8.0, 9.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0,
            ])
        });
        let leader = Family::<LeaseLabels, Gauge>::default();
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            reconciles.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            durations.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "1 while this replica holds the named lease, 0 otherwise",
            leader.clone(),
        );
        let invalid = keda_http_runtime::watch::InvalidObjects::register(&mut registry);
        Self {
            registry: Arc::new(registry),
            reconciles,
            errors,
            durations,
            leader,
            invalid,
        }
    }

    /// `keda_http_invalid_objects_total{kind}`: HTTPScaledObjects and InterceptorRoutes the
    /// controllers skipped (and marked `InvalidSpec`) because they fail to decode or validate.
    pub fn invalid_objects(&self) -> keda_http_runtime::watch::InvalidObjects {
        self.invalid.clone()
    }

    /// Records one reconcile of `controller`.
    pub fn record(&self, controller: &str, outcome: Outcome, took: Duration) {
        let result = match outcome {
            Outcome::Success => "success",
            Outcome::Error => "error",
        };
        self.reconciles
            .get_or_create(&ResultLabels {
                controller: controller.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        let labels = ControllerLabels {
            controller: controller.to_owned(),
        };
        if outcome == Outcome::Error {
            self.errors.get_or_create(&labels).inc();
        }
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Sets the leader gauge for `lease`.
    pub fn set_leader(&self, lease: &str, leader: bool) {
        self.leader
            .get_or_create(&LeaseLabels {
                name: lease.to_owned(),
            })
            .set(i64::from(leader));
    }

    /// How many reconciles `controller` has run (any outcome).
    pub fn reconcile_count(&self, controller: &str) -> u64 {
        ["success", "error"]
            .iter()
            .map(|result| {
                self.reconciles
                    .get_or_create(&ResultLabels {
                        controller: controller.to_owned(),
                        result: (*result).to_owned(),
                    })
                    .get()
            })
            .sum()
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_with_controller_runtime_names() {
        let m = Metrics::new();
        m.record(
            "httpscaledobject",
            Outcome::Success,
            Duration::from_millis(3),
        );
        m.record("httpscaledobject", Outcome::Error, Duration::from_millis(3));
        m.set_leader("http-add-on.keda.sh", true);
        assert_eq!(m.reconcile_count("httpscaledobject"), 2);
        let text = m.render();
        for needle in [
            "controller_runtime_reconcile_total{controller=\"httpscaledobject\",result=\"success\"} 1",
            "controller_runtime_reconcile_errors_total{controller=\"httpscaledobject\"} 1",
            "controller_runtime_reconcile_time_seconds_count{controller=\"httpscaledobject\"} 2",
            "leader_election_master_status{name=\"http-add-on.keda.sh\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
