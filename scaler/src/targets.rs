//! The scaling settings of InterceptorRoutes and HTTPScaledObjects, looked up by name.
//!
//! The gRPC service only needs "what does the object named X in namespace N ask for", so that
//! question is the [`ScaledTargets`] trait: [`StaticTargets`] answers it from a map (tests, the
//! local KEDA stand-in), [`KubeTargets`] from kube-rs reflector stores fed by cluster-wide
//! watches. Those watches decode and validate each object on its own
//! ([`reflect_checked`]): an object our types refuse is skipped (logged once per change,
//! counted in `keda_http_invalid_objects_total{kind}`), so it cannot keep the others out;
//! KEDA asking for it gets NOT_FOUND.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{PoisonError, RwLock};

use futures::StreamExt as _;
use keda_http_api::{
    HTTPScaledObject, HTTPScaledObjectSpec, InterceptorRoute, InterceptorRouteSpec,
};
use keda_http_runtime::watch::{Checks, InvalidObjects, reflect_checked};
use kube::Client;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;

use crate::rate::RateConfig;

/// A request-rate target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateTarget {
    /// Requests per granularity bucket per replica.
    pub target: f64,
    /// Window and granularity.
    pub config: RateConfig,
}

/// What an InterceptorRoute's `spec.scalingMetric` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RouteScaling {
    /// `concurrency.targetValue`, if set.
    pub concurrency: Option<f64>,
    /// `requestRate`, if set.
    pub rate: Option<RateTarget>,
}

/// What an HTTPScaledObject asks for.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ScaledObjectScaling {
    /// `targetPendingRequests` (deprecated; default 100).
    pub target_pending_requests: Option<i32>,
    /// `scalingMetric.concurrency.targetValue`, if set.
    pub concurrency: Option<i32>,
    /// `scalingMetric.requestRate`, if set (its target is an integer on this CRD).
    pub rate: Option<(i32, RateConfig)>,
}

impl ScaledObjectScaling {
    /// The metric target: `targetPendingRequests` (default 100), overridden by the
    /// concurrency target, then by the rate target (compat §5.3).
    pub fn target(&self) -> i64 {
        let mut target = i64::from(self.target_pending_requests.unwrap_or(100));
        if let Some(c) = self.concurrency {
            target = i64::from(c);
        }
        if let Some((r, _)) = self.rate {
            target = i64::from(r);
        }
        target
    }
}

impl From<&InterceptorRouteSpec> for RouteScaling {
    fn from(spec: &InterceptorRouteSpec) -> Self {
        let metric = &spec.scaling_metric;
        Self {
            concurrency: metric
                .concurrency
                .as_ref()
                .map(|c| f64::from(c.target_value)),
            rate: metric.request_rate.as_ref().map(|r| RateTarget {
                target: f64::from(r.target_value),
                config: RateConfig::new(
                    Some(r.window_or_default()),
                    Some(r.granularity_or_default()),
                ),
            }),
        }
    }
}

impl From<&HTTPScaledObjectSpec> for ScaledObjectScaling {
    fn from(spec: &HTTPScaledObjectSpec) -> Self {
        let metric = spec.scaling_metric.as_ref();
        Self {
            target_pending_requests: spec.target_pending_requests,
            concurrency: metric
                .and_then(|m| m.concurrency.as_ref())
                .map(|c| c.target_value),
            rate: metric.and_then(|m| m.request_rate.as_ref()).map(|r| {
                (
                    r.target_value,
                    RateConfig::new(
                        r.window.map(|w| w.as_duration()),
                        r.granularity.map(|g| g.as_duration()),
                    ),
                )
            }),
        }
    }
}

/// Looks up scaling settings by namespace and name.
pub trait ScaledTargets: Send + Sync + 'static {
    /// The InterceptorRoute `namespace/name`, if it exists.
    fn interceptor_route(&self, namespace: &str, name: &str) -> Option<RouteScaling>;
    /// The HTTPScaledObject `namespace/name`, if it exists.
    fn http_scaled_object(&self, namespace: &str, name: &str) -> Option<ScaledObjectScaling>;
}

type Key = (String, String);

/// Scaling settings held in maps; for tests and in-process harnesses.
#[derive(Debug, Default)]
pub struct StaticTargets {
    routes: RwLock<HashMap<Key, RouteScaling>>,
    scaled_objects: RwLock<HashMap<Key, ScaledObjectScaling>>,
}

impl StaticTargets {
    /// No objects.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an InterceptorRoute.
    pub fn set_route(&self, namespace: &str, name: &str, scaling: RouteScaling) {
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((namespace.to_owned(), name.to_owned()), scaling);
    }

    /// Removes an InterceptorRoute.
    pub fn remove_route(&self, namespace: &str, name: &str) {
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Adds or replaces an HTTPScaledObject.
    pub fn set_scaled_object(&self, namespace: &str, name: &str, scaling: ScaledObjectScaling) {
        self.scaled_objects
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((namespace.to_owned(), name.to_owned()), scaling);
    }
}

impl ScaledTargets for StaticTargets {
    fn interceptor_route(&self, namespace: &str, name: &str) -> Option<RouteScaling> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    fn http_scaled_object(&self, namespace: &str, name: &str) -> Option<ScaledObjectScaling> {
        self.scaled_objects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }
}

/// Scaling settings read from reflector stores of every InterceptorRoute and HTTPScaledObject
/// in the cluster.
#[derive(Clone)]
pub struct KubeTargets {
    routes: Store<InterceptorRoute>,
    scaled_objects: Store<HTTPScaledObject>,
}

impl std::fmt::Debug for KubeTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTargets")
            .field("routes", &self.routes.len())
            .field("scaled_objects", &self.scaled_objects.len())
            .finish()
    }
}

impl KubeTargets {
    /// Starts cluster-wide watches of both kinds. The returned future drives them (retrying
    /// within a second on errors) and never ends; spawn it.
    pub fn watch(client: Client) -> (Self, impl Future<Output = ()> + Send + 'static) {
        Self::watch_counted(client, InvalidObjects::default())
    }

    /// [`watch`](Self::watch), counting skipped objects in `invalid`.
    pub fn watch_counted(
        client: Client,
        invalid: InvalidObjects,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (routes, route_writer) = reflector::store();
        let (scaled_objects, so_writer) = reflector::store();
        let route_stream = reflect_checked(
            client.clone(),
            None,
            watcher::Config::default(),
            route_writer,
            Checks::new(|ir: &InterceptorRoute| ir.spec.validate().map_err(|e| e.to_string()))
                .counted(invalid.clone()),
        );
        let so_stream = reflect_checked(
            client,
            None,
            watcher::Config::default(),
            so_writer,
            Checks::new(|so: &HTTPScaledObject| so.spec.validate().map_err(|e| e.to_string()))
                .counted(invalid),
        );
        let drive = async move {
            let routes = route_stream.for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, "InterceptorRoute watch");
                }
            });
            let scaled_objects = so_stream.for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, "HTTPScaledObject watch");
                }
            });
            futures::join!(routes, scaled_objects);
        };
        (
            Self {
                routes,
                scaled_objects,
            },
            drive,
        )
    }

    /// Waits until both stores have completed their first list.
    pub async fn wait_until_ready(&self) {
        let _ = futures::join!(
            self.routes.wait_until_ready(),
            self.scaled_objects.wait_until_ready()
        );
    }
}

impl ScaledTargets for KubeTargets {
    fn interceptor_route(&self, namespace: &str, name: &str) -> Option<RouteScaling> {
        self.routes
            .get(&ObjectRef::new(name).within(namespace))
            .map(|route| RouteScaling::from(&route.spec))
    }

    fn http_scaled_object(&self, namespace: &str, name: &str) -> Option<ScaledObjectScaling> {
        self.scaled_objects
            .get(&ObjectRef::new(name).within(namespace))
            .map(|so| ScaledObjectScaling::from(&so.spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_object_target_precedence() {
        let mut s = ScaledObjectScaling::default();
        assert_eq!(s.target(), 100);
        s.target_pending_requests = Some(7);
        assert_eq!(s.target(), 7);
        s.concurrency = Some(20);
        assert_eq!(s.target(), 20);
        s.rate = Some((50, RateConfig::default()));
        assert_eq!(s.target(), 50, "the rate target wins");
    }

    #[test]
    fn converts_crd_specs() {
        let route: InterceptorRouteSpec = serde_json::from_value(serde_json::json!({
            "target": {"service": "web", "port": 8080},
            "rules": [{"hosts": ["web.example"]}],
            "scalingMetric": {
                "concurrency": {"targetValue": 10},
                "requestRate": {"targetValue": 5, "window": "10s", "granularity": "100ms"}
            }
        }))
        .expect("route spec");
        let scaling = RouteScaling::from(&route);
        assert_eq!(scaling.concurrency, Some(10.0));
        let rate = scaling.rate.expect("rate");
        assert_eq!(rate.target, 5.0);
        assert_eq!(rate.config.window(), std::time::Duration::from_secs(10));
        assert_eq!(
            rate.config.granularity(),
            std::time::Duration::from_millis(100)
        );

        let so: HTTPScaledObjectSpec = serde_json::from_value(serde_json::json!({
            "hosts": ["a.example"],
            "scaleTargetRef": {"name": "web", "service": "web", "port": 8080},
            "targetPendingRequests": 30
        }))
        .expect("httpso spec");
        let scaling = ScaledObjectScaling::from(&so);
        assert_eq!(scaling.target(), 30);
        assert_eq!(scaling.rate, None);
    }
}
