//! The external scaler as the KEDA stand-in sees it: the four RPCs of
//! `externalscaler.ExternalScaler` behind a small object-safe trait, so the scaling logic can be
//! driven by a scripted fake in tests and by the real gRPC client against our scaler.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// `externalscaler.ScaledObjectRef`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScaledObjectRef {
    /// ScaledObject name.
    pub name: String,
    /// ScaledObject namespace.
    pub namespace: String,
    /// The trigger's metadata.
    pub scaler_metadata: BTreeMap<String, String>,
}

/// `externalscaler.MetricSpec`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MetricSpec {
    /// Metric name.
    pub metric_name: String,
    /// Deprecated integer target.
    pub target_size: i64,
    /// Target; wins when > 0.
    pub target_size_float: f64,
}

impl MetricSpec {
    /// The target KEDA uses: `targetSizeFloat` if > 0, else `targetSize`.
    pub fn target(&self) -> f64 {
        if self.target_size_float > 0.0 {
            self.target_size_float
        } else {
            // Targets are small; precision loss above 2^53 does not matter.
            self.target_size as f64
        }
    }
}

/// `externalscaler.MetricValue`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MetricValue {
    /// Metric name.
    pub metric_name: String,
    /// Deprecated integer value.
    pub metric_value: i64,
    /// Value; wins when > 0.
    pub metric_value_float: f64,
}

impl MetricValue {
    /// The value KEDA uses: `metricValueFloat` if > 0, else `metricValue`.
    pub fn value(&self) -> f64 {
        if self.metric_value_float > 0.0 {
            self.metric_value_float
        } else {
            self.metric_value as f64
        }
    }
}

/// A failed call to the scaler.
#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    /// The address could not be turned into a channel.
    #[error("scaler address {address}: {reason}")]
    Address {
        /// The trigger's `scalerAddress`.
        address: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The RPC failed (transport error or gRPC status).
    #[error("{rpc}: {message}")]
    Rpc {
        /// The RPC name.
        rpc: &'static str,
        /// The status or transport error.
        message: String,
    },
}

/// The `StreamIsActive` stream: one item per message the scaler sends.
pub type ActivityStream = BoxStream<'static, Result<bool, ScalerError>>;

/// The RPCs of `externalscaler.ExternalScaler` KEDA uses.
pub trait ExternalScaler: Send + Sync {
    /// `IsActive`.
    fn is_active(&self, so: &ScaledObjectRef) -> BoxFuture<'static, Result<bool, ScalerError>>;
    /// `StreamIsActive`: resolves once the stream is open.
    fn stream_is_active(
        &self,
        so: &ScaledObjectRef,
    ) -> BoxFuture<'static, Result<ActivityStream, ScalerError>>;
    /// `GetMetricSpec`.
    fn get_metric_spec(
        &self,
        so: &ScaledObjectRef,
    ) -> BoxFuture<'static, Result<Vec<MetricSpec>, ScalerError>>;
    /// `GetMetrics` for one metric name.
    fn get_metrics(
        &self,
        so: &ScaledObjectRef,
        metric_name: &str,
    ) -> BoxFuture<'static, Result<Vec<MetricValue>, ScalerError>>;
}

/// Opens (lazily) a scaler client for a resolved address such as `127.0.0.1:9090`.
pub trait ScalerConnector: Send + Sync {
    /// A client for `address`; connecting may happen on first use.
    fn connect(&self, address: &str) -> Result<Arc<dyn ExternalScaler>, ScalerError>;
}
