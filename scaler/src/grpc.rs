//! The `externalscaler.ExternalScaler` service KEDA calls (compat §5).
//!
//! The metadata of the ScaledObject's trigger picks one of three modes, in this order:
//!
//! | metadata key | metric(s) | target | value |
//! | --- | --- | --- | --- |
//! | `interceptorRoute: <ir>` | `http_<ir>_concurrency`, `http_<ir>_rate` | `targetSizeFloat` from the route | `metricValueFloat`: concurrency, windowed rate |
//! | `httpScaledObject: <name>` | `escape("http-<ns>/<name>")` | `targetSize` (pending requests, concurrency or rate target) | `metricValue`: concurrency, or `ceil(rate)` |
//! | `interceptorTargetPendingRequests: <n>` | `escape("http-<ns>/<so>")` | `targetSize = n` | `metricValue`: concurrency summed over every route |
//!
//! Objects are looked up in the ScaledObject's namespace; a missing one is a `NOT_FOUND`
//! error that names it.
//!
//! Activity (`IsActive`, `StreamIsActive`) is "some metric value > 0" as upstream, **or** "the
//! route received a request since the previous report" (sparse traffic: one request a minute
//! must keep the app alive through KEDA's cooldown even though it is never in flight when a
//! poll happens). Each `StreamIsActive` stream keeps its own "previous report", starting at the
//! stream's first message; unary `IsActive` keeps one per route.
//!
//! `StreamIsActive` sends a message every stream interval, as upstream, and additionally as
//! soon as the aggregate changes the answer (a push from an interceptor), so an idle → active
//! change reaches KEDA without waiting for the interval or the poll tick.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::aggregate::QueueState;
use crate::naming;
use crate::proto::external_scaler_server::ExternalScaler;
use crate::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use crate::rate::RateConfig;
use crate::targets::{RouteScaling, ScaledTargets};

/// Trigger metadata key naming an InterceptorRoute.
pub const META_INTERCEPTOR_ROUTE: &str = "interceptorRoute";
/// Trigger metadata key naming an HTTPScaledObject.
pub const META_HTTP_SCALED_OBJECT: &str = "httpScaledObject";
/// Trigger metadata key of the interceptor's own ScaledObject.
pub const META_INTERCEPTOR_TARGET_PENDING: &str = "interceptorTargetPendingRequests";

/// The metric mode of one ScaledObject trigger, resolved against the current objects.
#[derive(Debug, Clone)]
enum Mode {
    Route {
        name: String,
        key: String,
        scaling: RouteScaling,
    },
    ScaledObject {
        key: String,
        metric: String,
        target: i64,
        rate: Option<RateConfig>,
    },
    Interceptor {
        metric: String,
        target: i64,
    },
}

impl Mode {
    /// The key whose `requests_seen` measures activity (`None`: all keys).
    fn activity_key(&self) -> Option<&str> {
        match self {
            Mode::Route { key, .. } | Mode::ScaledObject { key, .. } => Some(key),
            Mode::Interceptor { .. } => None,
        }
    }

    fn specs(&self) -> Vec<MetricSpec> {
        match self {
            Mode::Route { name, scaling, .. } => {
                let mut specs = Vec::with_capacity(2);
                if let Some(target) = scaling.concurrency {
                    specs.push(MetricSpec {
                        metric_name: naming::route_concurrency_metric(name),
                        target_size: 0,
                        target_size_float: target,
                    });
                }
                if let Some(rate) = scaling.rate {
                    specs.push(MetricSpec {
                        metric_name: naming::route_rate_metric(name),
                        target_size: 0,
                        target_size_float: rate.target,
                    });
                }
                specs
            }
            Mode::ScaledObject { metric, target, .. } | Mode::Interceptor { metric, target } => {
                vec![MetricSpec {
                    metric_name: metric.clone(),
                    target_size: *target,
                    target_size_float: 0.0,
                }]
            }
        }
    }
}

/// The gRPC service. Cheap to clone.
#[derive(Clone)]
pub struct ScalerService {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<QueueState>,
    targets: Arc<dyn ScaledTargets>,
    stream_interval: Duration,
    /// Unary `IsActive`: requests seen per activity key at the previous report.
    reported: Mutex<HashMap<String, u64>>,
    /// Ends every open stream (server shutdown).
    shutdown: CancellationToken,
}

impl std::fmt::Debug for ScalerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScalerService")
            .field("stream_interval", &self.inner.stream_interval)
            .finish_non_exhaustive()
    }
}

impl ScalerService {
    /// A service answering from `state` and `targets`. `StreamIsActive` streams send every
    /// `stream_interval` and end when `shutdown` is cancelled.
    pub fn new(
        state: Arc<QueueState>,
        targets: Arc<dyn ScaledTargets>,
        stream_interval: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                state,
                targets,
                stream_interval,
                reported: Mutex::new(HashMap::new()),
                shutdown,
            }),
        }
    }
}

impl Inner {
    fn resolve(&self, sor: &ScaledObjectRef) -> Result<Mode, Status> {
        let meta = &sor.scaler_metadata;
        let namespace = sor.namespace.as_str();
        if let Some(name) = meta.get(META_INTERCEPTOR_ROUTE) {
            let scaling = self
                .targets
                .interceptor_route(namespace, name)
                .ok_or_else(|| {
                    Status::not_found(format!("InterceptorRoute {namespace}/{name} not found"))
                })?;
            return Ok(Mode::Route {
                name: name.clone(),
                key: naming::queue_key(namespace, name),
                scaling,
            });
        }
        if let Some(name) = meta.get(META_HTTP_SCALED_OBJECT) {
            let scaling = self
                .targets
                .http_scaled_object(namespace, name)
                .ok_or_else(|| {
                    Status::not_found(format!("HTTPScaledObject {namespace}/{name} not found"))
                })?;
            return Ok(Mode::ScaledObject {
                key: naming::queue_key(namespace, name),
                metric: naming::scaled_object_metric(namespace, name),
                target: scaling.target(),
                rate: scaling.rate.map(|(_, config)| config),
            });
        }
        if let Some(raw) = meta.get(META_INTERCEPTOR_TARGET_PENDING) {
            let target = raw.trim().parse::<i64>().map_err(|e| {
                Status::invalid_argument(format!(
                    "{META_INTERCEPTOR_TARGET_PENDING} {raw:?} is not an integer: {e}"
                ))
            })?;
            return Ok(Mode::Interceptor {
                metric: naming::scaled_object_metric(namespace, &sor.name),
                target,
            });
        }
        Err(Status::invalid_argument(format!(
            "unable to get HTTPScaledObject reference: trigger metadata of {namespace}/{} has none of \
             {META_INTERCEPTOR_ROUTE}, {META_HTTP_SCALED_OBJECT}, {META_INTERCEPTOR_TARGET_PENDING}",
            sor.name
        )))
    }

    /// The metric values of `mode`, filtered by `metric_name` (empty: all), and the activity
    /// counter of the mode.
    fn values(&self, mode: &Mode, metric_name: &str) -> (Vec<MetricValue>, u64) {
        let now = self.state.now();
        let mut agg = self.state.lock();
        let seen = match mode.activity_key() {
            Some(key) => agg.requests_seen(key),
            None => agg.total_requests_seen(),
        };
        let wanted = |name: &str| metric_name.is_empty() || metric_name == name;
        let mut values = Vec::with_capacity(2);
        match mode {
            Mode::Route { name, key, scaling } => {
                if scaling.concurrency.is_some() {
                    let metric = naming::route_concurrency_metric(name);
                    if wanted(&metric) {
                        values.push(float_value(metric, agg.concurrency(key) as f64));
                    }
                }
                if let Some(rate) = scaling.rate {
                    let metric = naming::route_rate_metric(name);
                    if wanted(&metric) {
                        values.push(float_value(metric, agg.rate(key, now, rate.config)));
                    }
                }
            }
            Mode::ScaledObject {
                key, metric, rate, ..
            } => {
                let value = match rate {
                    Some(config) => ceil_i64(agg.rate(key, now, *config)),
                    None => agg.concurrency(key),
                };
                values.push(int_value(metric.clone(), value));
            }
            Mode::Interceptor { metric, .. } => {
                values.push(int_value(metric.clone(), agg.total_concurrency()));
            }
        }
        (values, seen)
    }

    /// IsActive: an error if the mode yields no value; otherwise whether any value is > 0 or
    /// requests were seen since `previous`. Also returns the current activity counter.
    fn activity(&self, mode: &Mode, previous: Option<u64>) -> Result<(bool, u64), Status> {
        let (values, seen) = self.values(mode, "");
        if values.is_empty() {
            return Err(Status::failed_precondition(
                "no metrics configured for this ScaledObject's target",
            ));
        }
        let busy = values
            .iter()
            .any(|v| v.metric_value > 0 || v.metric_value_float > 0.0);
        let recent = previous.is_some_and(|p| seen > p);
        Ok((busy || recent, seen))
    }
}

fn float_value(metric_name: String, value: f64) -> MetricValue {
    MetricValue {
        metric_name,
        metric_value: 0,
        metric_value_float: value,
    }
}

fn int_value(metric_name: String, value: i64) -> MetricValue {
    MetricValue {
        metric_name,
        metric_value: value,
        metric_value_float: 0.0,
    }
}

fn ceil_i64(v: f64) -> i64 {
    // Saturating float-to-int conversion; rates are small, finite and non-negative.
    v.ceil() as i64
}

type StreamOf<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let sor = request.into_inner();
        let inner = &self.inner;
        let mode = inner.resolve(&sor)?;
        let report_key = mode.activity_key().unwrap_or("*").to_owned();
        let previous = inner
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&report_key)
            .copied();
        let (result, seen) = inner.activity(&mode, previous)?;
        inner
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(report_key, seen);
        Ok(Response::new(IsActiveResponse { result }))
    }

    type StreamIsActiveStream = StreamOf<IsActiveResponse>;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let sor = request.into_inner();
        // Fail the call itself (not just the stream) if the object is unknown right now.
        self.inner.resolve(&sor)?;
        let (tx, rx) = mpsc::channel(4);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { stream_activity(inner, sor, tx).await });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let mode = self.inner.resolve(request.get_ref())?;
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: mode.specs(),
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let request = request.into_inner();
        let sor = request
            .scaled_object_ref
            .ok_or_else(|| Status::invalid_argument("scaledObjectRef is required"))?;
        let mode = self.inner.resolve(&sor)?;
        let (metric_values, _) = self.inner.values(&mode, &request.metric_name);
        Ok(Response::new(GetMetricsResponse { metric_values }))
    }

    type StreamMetricSpecStream = StreamOf<GetMetricSpecResponse>;

    async fn stream_metric_spec(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        // KEDA falls back to GetMetricSpec, as it does with the official scaler.
        Err(Status::unimplemented(
            "StreamMetricSpec is not implemented; use GetMetricSpec",
        ))
    }
}

/// Drives one `StreamIsActive` stream until the client goes away, the server shuts down or
/// the object disappears (the stream then ends with that error, as upstream).
async fn stream_activity(
    inner: Arc<Inner>,
    sor: ScaledObjectRef,
    tx: mpsc::Sender<Result<IsActiveResponse, Status>>,
) {
    let mut interval = tokio::time::interval(inner.stream_interval);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut changes = inner.state.subscribe();
    let mut previous: Option<u64> = None;
    let mut last_sent: Option<bool> = None;
    loop {
        let periodic = tokio::select! {
            biased;
            () = inner.shutdown.cancelled() => return,
            () = tx.closed() => return,
            _ = interval.tick() => true,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
        };
        let outcome = inner
            .resolve(&sor)
            .and_then(|mode| inner.activity(&mode, previous));
        match outcome {
            Ok((active, seen)) => {
                if previous.is_none() {
                    // The first report sets the baseline for "requests since the previous
                    // report".
                    previous = Some(seen);
                }
                if periodic || last_sent != Some(active) {
                    if tx
                        .send(Ok(IsActiveResponse { result: active }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    last_sent = Some(active);
                    previous = Some(seen);
                }
            }
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }
}
