//! The loop KEDA (plus the HPA it creates) runs for one ScaledObject: the `StreamIsActive`
//! streams of `external-push` triggers, the poll every `pollingInterval`, and the HPA sync.
//! It is generic over where the replica count lives ([`ScaleTarget`]) so it runs in tests
//! without an API server.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::decision::{Executor, ExecutorSpec, Hpa, HpaConfig, MetricReading, MetricTarget};
use super::scaler::{ExternalScaler, ScaledObjectRef, ScalerError};

/// Where the scaled workload's replica count lives, and where the ScaledObject's conditions go.
pub trait ScaleTarget: Send + Sync {
    /// The current replica count (`Deployment/scale` `spec.replicas`).
    fn replicas(&self) -> BoxFuture<'_, Result<i32, TargetError>>;
    /// Writes the replica count.
    fn scale(&self, replicas: i32) -> BoxFuture<'_, Result<(), TargetError>>;
    /// Writes the ScaledObject's Ready / Active conditions.
    fn report(&self, status: &Report) -> BoxFuture<'_, Result<(), TargetError>>;
}

/// A failed read or write of the scale target.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

/// What the ScaledObject's conditions say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `Ready`: `Ok` or the error of a trigger.
    pub ready: Result<(), String>,
    /// `Active`: a trigger is active.
    pub active: bool,
}

/// One `external` / `external-push` trigger, resolved.
#[derive(Clone)]
pub struct Trigger {
    /// `external-push`: hold a `StreamIsActive` stream.
    pub push: bool,
    /// The reference sent with every RPC.
    pub so_ref: ScaledObjectRef,
    /// The trigger's `metricType` is `Value` (otherwise `AverageValue`).
    pub value_metric: bool,
    /// The scaler client.
    pub scaler: Arc<dyn ExternalScaler>,
}

/// The loop's timings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Between polls (`pollingInterval`).
    pub polling: Duration,
    /// Between HPA syncs (the controller manager's 15 s by default).
    pub hpa_sync: Duration,
    /// First reconnect delay of a broken `StreamIsActive` stream (KEDA: 2 s).
    pub backoff_initial: Duration,
    /// Reconnect delay cap (KEDA: 1 min).
    pub backoff_max: Duration,
}

/// Runs the loop until the future is dropped.
pub async fn run(
    triggers: Vec<Trigger>,
    spec: ExecutorSpec,
    hpa: HpaConfig,
    timing: Timing,
    target: Arc<dyn ScaleTarget>,
    created: Instant,
) {
    let mut streams = JoinSet::new();
    let (tx, mut pushed) = mpsc::channel::<bool>(16);
    for trigger in triggers.iter().filter(|t| t.push) {
        streams.spawn(hold_stream(trigger.clone(), timing, tx.clone()));
    }
    drop(tx);

    let mut state = Loop {
        triggers,
        executor: Executor::new(spec, created),
        hpa: Hpa::new(hpa),
        bounds: spec.bounds,
        target,
        reported: None,
    };
    let mut poll = tokio::time::interval(timing.polling.max(Duration::from_millis(1)));
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let hpa_period = timing.hpa_sync.max(Duration::from_millis(1));
    let mut hpa_tick = tokio::time::interval_at(Instant::now() + hpa_period, hpa_period);
    hpa_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut streams_open = true;
    loop {
        tokio::select! {
            msg = pushed.recv(), if streams_open => match msg {
                Some(active) => state.activity(active, None).await,
                None => streams_open = false,
            },
            _ = poll.tick() => state.poll().await,
            _ = hpa_tick.tick() => state.hpa_sync().await,
        }
    }
}

/// Keeps a `StreamIsActive` stream open, forwarding its messages, reconnecting with backoff.
async fn hold_stream(trigger: Trigger, timing: Timing, tx: mpsc::Sender<bool>) {
    let mut delay = timing.backoff_initial;
    loop {
        match trigger.scaler.stream_is_active(&trigger.so_ref).await {
            Ok(mut stream) => {
                while let Some(msg) = stream.next().await {
                    match msg {
                        Ok(active) => {
                            delay = timing.backoff_initial;
                            if tx.send(active).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, so = %trigger.so_ref.name, "StreamIsActive broke");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, so = %trigger.so_ref.name, "StreamIsActive failed");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(timing.backoff_max);
    }
}

struct Loop {
    triggers: Vec<Trigger>,
    executor: Executor,
    hpa: Hpa,
    bounds: super::decision::Bounds,
    target: Arc<dyn ScaleTarget>,
    reported: Option<Report>,
}

impl Loop {
    /// KEDA's scale executor on one activity result; `ready` is set after a poll.
    async fn activity(&mut self, active: bool, ready: Option<Result<(), String>>) {
        let current = match self.target.replicas().await {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(%error, "reading the scale target failed");
                return;
            }
        };
        if let Some(n) = self.executor.on_activity(active, current, Instant::now()) {
            tracing::info!(from = current, to = n, active, "KEDA scales the target");
            if let Err(error) = self.target.scale(n).await {
                tracing::warn!(%error, "writing the scale target failed");
            }
        }
        let ready = ready.unwrap_or_else(|| {
            self.reported
                .as_ref()
                .map_or(Ok(()), |report| report.ready.clone())
        });
        let report = Report { ready, active };
        if self.reported.as_ref() != Some(&report) {
            match self.target.report(&report).await {
                Ok(()) => self.reported = Some(report),
                Err(error) => tracing::warn!(%error, "writing the ScaledObject status failed"),
            }
        }
    }

    /// The poll: `GetMetricSpec`, `GetMetrics` and `IsActive` of every trigger.
    async fn poll(&mut self) {
        let mut active = false;
        let mut ready = Ok(());
        for trigger in &self.triggers {
            match poll_trigger(trigger).await {
                Ok(a) => active |= a,
                Err(error) => {
                    tracing::warn!(%error, so = %trigger.so_ref.name, "trigger poll failed");
                    ready = Err(error.to_string());
                }
            }
        }
        self.activity(active, Some(ready)).await;
    }

    /// One HPA sync over the metrics of every trigger.
    async fn hpa_sync(&mut self) {
        let current = match self.target.replicas().await {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(%error, "reading the scale target failed");
                return;
            }
        };
        if current <= 0 {
            return;
        }
        let mut readings = Vec::new();
        for trigger in &self.triggers {
            match read_metrics(trigger).await {
                Ok(mut r) => readings.append(&mut r),
                Err(error) => {
                    tracing::warn!(%error, so = %trigger.so_ref.name, "HPA metric read failed");
                }
            }
        }
        if let Some(n) = self
            .hpa
            .sync(&readings, current, self.bounds, Instant::now())
        {
            tracing::info!(from = current, to = n, ?readings, "HPA scales the target");
            if let Err(error) = self.target.scale(n).await {
                tracing::warn!(%error, "writing the scale target failed");
            }
        }
    }
}

/// KEDA's `GetMetricsAndActivity` for one trigger: the metrics, then `IsActive`.
async fn poll_trigger(trigger: &Trigger) -> Result<bool, ScalerError> {
    read_metrics(trigger).await?;
    trigger.scaler.is_active(&trigger.so_ref).await
}

/// `GetMetricSpec`, then `GetMetrics` for each spec, as HPA readings.
async fn read_metrics(trigger: &Trigger) -> Result<Vec<MetricReading>, ScalerError> {
    let specs = trigger.scaler.get_metric_spec(&trigger.so_ref).await?;
    let mut readings = Vec::with_capacity(specs.len());
    for spec in specs {
        let values = trigger
            .scaler
            .get_metrics(&trigger.so_ref, &spec.metric_name)
            .await?;
        let value = values.iter().map(|v| v.value()).sum();
        let target = if trigger.value_metric {
            MetricTarget::Value(spec.target())
        } else {
            MetricTarget::AverageValue(spec.target())
        };
        readings.push(MetricReading {
            name: spec.metric_name,
            target,
            value,
        });
    }
    Ok(readings)
}

#[cfg(test)]
mod tests;
