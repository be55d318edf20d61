//! A scripted external scaler for tests: metric values, activity and failures are set by the
//! test, and `StreamIsActive` messages are pushed explicitly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::scaler::{
    ActivityStream, ExternalScaler, MetricSpec, MetricValue, ScaledObjectRef, ScalerConnector,
    ScalerError,
};

#[derive(Default)]
struct State {
    /// Metric name → (target, value), in `GetMetricSpec` order.
    metrics: BTreeMap<String, (f64, f64)>,
    active: bool,
    failing: bool,
    streams: Vec<mpsc::UnboundedSender<Result<bool, ScalerError>>>,
    refs: Vec<ScaledObjectRef>,
}

/// A scripted scaler. Clones share their script.
#[derive(Clone)]
pub struct FakeScaler {
    state: Arc<Mutex<State>>,
    opened: Arc<watch::Sender<usize>>,
}

impl Default for FakeScaler {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeScaler {
    /// A scaler with no metrics, inactive.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            opened: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets (or adds) a metric with its target (`targetSizeFloat`) and current value.
    pub fn set_metric(&self, name: &str, target: f64, value: f64) {
        self.lock().metrics.insert(name.to_owned(), (target, value));
    }

    /// Sets what `IsActive` answers. Does not push on open streams (see [`Self::push`]).
    pub fn set_active(&self, active: bool) {
        self.lock().active = active;
    }

    /// Sends one `StreamIsActive` message on every open stream; returns how many got it.
    pub fn push(&self, active: bool) -> usize {
        let mut state = self.lock();
        state.streams.retain(|tx| tx.send(Ok(active)).is_ok());
        state.streams.len()
    }

    /// Ends every open stream with an error (the client is expected to reconnect).
    pub fn break_streams(&self) {
        let mut state = self.lock();
        for tx in state.streams.drain(..) {
            let _ = tx.send(Err(ScalerError::Rpc {
                rpc: "StreamIsActive",
                message: "stream broken by the test".to_owned(),
            }));
        }
    }

    /// Makes every RPC fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// How many `StreamIsActive` streams were opened so far.
    pub fn streams_opened(&self) -> usize {
        *self.opened.borrow()
    }

    /// Waits until at least `n` streams were opened in total.
    pub async fn wait_streams_opened(&self, n: usize) {
        let mut rx = self.opened.subscribe();
        // The sender lives in `self`, so the wait cannot fail.
        let _ = rx.wait_for(|&opened| opened >= n).await;
    }

    /// Every `ScaledObjectRef` received so far, oldest first.
    pub fn refs(&self) -> Vec<ScaledObjectRef> {
        self.lock().refs.clone()
    }

    fn record(&self, so: &ScaledObjectRef, rpc: &'static str) -> Result<(), ScalerError> {
        let mut state = self.lock();
        state.refs.push(so.clone());
        if state.failing {
            Err(ScalerError::Rpc {
                rpc,
                message: "failing by script".to_owned(),
            })
        } else {
            Ok(())
        }
    }
}

impl ExternalScaler for FakeScaler {
    fn is_active(&self, so: &ScaledObjectRef) -> BoxFuture<'static, Result<bool, ScalerError>> {
        let result = self.record(so, "IsActive").map(|()| self.lock().active);
        futures::future::ready(result).boxed()
    }

    fn stream_is_active(
        &self,
        so: &ScaledObjectRef,
    ) -> BoxFuture<'static, Result<ActivityStream, ScalerError>> {
        let result = self.record(so, "StreamIsActive").map(|()| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.lock().streams.push(tx);
            self.opened.send_modify(|n| *n += 1);
            UnboundedReceiverStream::new(rx).boxed()
        });
        futures::future::ready(result).boxed()
    }

    fn get_metric_spec(
        &self,
        so: &ScaledObjectRef,
    ) -> BoxFuture<'static, Result<Vec<MetricSpec>, ScalerError>> {
        let result = self.record(so, "GetMetricSpec").map(|()| {
            self.lock()
                .metrics
                .iter()
                .map(|(name, &(target, _))| MetricSpec {
                    metric_name: name.clone(),
                    target_size: 0,
                    target_size_float: target,
                })
                .collect()
        });
        futures::future::ready(result).boxed()
    }

    fn get_metrics(
        &self,
        so: &ScaledObjectRef,
        metric_name: &str,
    ) -> BoxFuture<'static, Result<Vec<MetricValue>, ScalerError>> {
        let result = self.record(so, "GetMetrics").map(|()| {
            self.lock()
                .metrics
                .iter()
                .filter(|(name, _)| metric_name.is_empty() || name.as_str() == metric_name)
                .map(|(name, &(_, value))| MetricValue {
                    metric_name: name.clone(),
                    metric_value: 0,
                    metric_value_float: value,
                })
                .collect()
        });
        futures::future::ready(result).boxed()
    }
}

/// A connector that hands out scripted scalers by resolved address and records the addresses.
#[derive(Clone, Default)]
pub struct FakeConnector {
    scalers: Arc<Mutex<BTreeMap<String, FakeScaler>>>,
}

impl FakeConnector {
    /// An empty connector: unknown addresses get an error.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `scaler` at `address`.
    pub fn insert(&self, address: &str, scaler: FakeScaler) {
        self.scalers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(address.to_owned(), scaler);
    }
}

impl ScalerConnector for FakeConnector {
    fn connect(&self, address: &str) -> Result<Arc<dyn ExternalScaler>, ScalerError> {
        let scalers = self.scalers.lock().unwrap_or_else(PoisonError::into_inner);
        match scalers.get(address) {
            Some(scaler) => Ok(Arc::new(scaler.clone())),
            None => Err(ScalerError::Address {
                address: address.to_owned(),
                reason: "no fake scaler at this address".to_owned(),
            }),
        }
    }
}
