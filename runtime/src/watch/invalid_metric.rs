//! The per-kind counter of objects a watch skipped: `keda_http_invalid_objects_total{kind}`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The metric name as registered (the exposition adds `_total`).
pub const NAME: &str = "keda_http_invalid_objects";

type Labels = Vec<(&'static str, String)>;

/// Objects skipped because they fail to decode or validate, per kind, counted once per
/// change of the object. Cheap to clone; clones count into the same series.
#[derive(Debug, Clone, Default)]
pub struct InvalidObjects(Family<Labels, Counter>);

impl InvalidObjects {
    /// Creates the counter and registers it in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let this = Self::default();
        this.register_in(registry);
        this
    }

    /// Registers this counter in `registry` (for a counter made before the registry).
    pub fn register_in(&self, registry: &mut Registry) {
        registry.register(
            NAME,
            "Objects a watch skipped because they fail to decode or validate, per kind \
             (once per change of the object)",
            self.0.clone(),
        );
    }

    /// Counts one skipped object of `kind`.
    pub fn inc(&self, kind: &str) {
        self.0.get_or_create(&labels(kind)).inc();
    }

    /// How many objects of `kind` were skipped so far.
    pub fn get(&self, kind: &str) -> u64 {
        self.0.get_or_create(&labels(kind)).get()
    }
}

fn labels(kind: &str) -> Labels {
    vec![("kind", kind.to_owned())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_kind_in_the_exposition() {
        let mut registry = Registry::default();
        let metric = InvalidObjects::register(&mut registry);
        metric.inc("InterceptorRoute");
        metric.inc("InterceptorRoute");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("keda_http_invalid_objects_total{kind=\"InterceptorRoute\"} 2"),
            "{text}"
        );
        assert_eq!(metric.get("HTTPScaledObject"), 0);
    }
}
