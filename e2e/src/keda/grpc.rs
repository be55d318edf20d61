//! The real transport: [`ExternalScaler`] over the gRPC client generated in `keda-http-api`,
//! plaintext h2c as KEDA uses in-cluster. Channels are opened lazily and shared per address,
//! as KEDA pools its connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use keda_http_api::externalscaler as proto;
use keda_http_api::externalscaler::external_scaler_client::ExternalScalerClient;
use tonic::transport::{Channel, Endpoint};

use super::scaler::{
    ActivityStream, ExternalScaler, MetricSpec, MetricValue, ScaledObjectRef, ScalerConnector,
    ScalerError,
};

/// Opens gRPC channels to scalers, one per address.
#[derive(Clone, Default)]
pub struct GrpcConnector {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl GrpcConnector {
    /// A connector with no channels yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ScalerConnector for GrpcConnector {
    fn connect(&self, address: &str) -> Result<Arc<dyn ExternalScaler>, ScalerError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{address}")).map_err(|e| {
                    ScalerError::Address {
                        address: address.to_owned(),
                        reason: e.to_string(),
                    }
                })?;
                let channel = endpoint.connect_lazy();
                channels.insert(address.to_owned(), channel.clone());
                channel
            }
        };
        Ok(Arc::new(GrpcScaler {
            client: ExternalScalerClient::new(channel),
        }))
    }
}

/// One scaler reached over gRPC.
#[derive(Clone)]
pub struct GrpcScaler {
    client: ExternalScalerClient<Channel>,
}

fn to_proto(so: &ScaledObjectRef) -> proto::ScaledObjectRef {
    proto::ScaledObjectRef {
        name: so.name.clone(),
        namespace: so.namespace.clone(),
        scaler_metadata: so
            .scaler_metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn rpc_error(rpc: &'static str) -> impl Fn(tonic::Status) -> ScalerError {
    move |status| ScalerError::Rpc {
        rpc,
        message: format!("{:?}: {}", status.code(), status.message()),
    }
}

impl ExternalScaler for GrpcScaler {
    fn is_active(&self, so: &ScaledObjectRef) -> BoxFuture<'static, Result<bool, ScalerError>> {
        let mut client = self.client.clone();
        let request = to_proto(so);
        async move {
            let response = client
                .is_active(request)
                .await
                .map_err(rpc_error("IsActive"))?;
            Ok(response.into_inner().result)
        }
        .boxed()
    }

    fn stream_is_active(
        &self,
        so: &ScaledObjectRef,
    ) -> BoxFuture<'static, Result<ActivityStream, ScalerError>> {
        let mut client = self.client.clone();
        let request = to_proto(so);
        async move {
            let response = client
                .stream_is_active(request)
                .await
                .map_err(rpc_error("StreamIsActive"))?;
            let stream = response.into_inner().map(|message| {
                message
                    .map(|m| m.result)
                    .map_err(rpc_error("StreamIsActive"))
            });
            Ok(stream.boxed())
        }
        .boxed()
    }

    fn get_metric_spec(
        &self,
        so: &ScaledObjectRef,
    ) -> BoxFuture<'static, Result<Vec<MetricSpec>, ScalerError>> {
        let mut client = self.client.clone();
        let request = to_proto(so);
        async move {
            let response = client
                .get_metric_spec(request)
                .await
                .map_err(rpc_error("GetMetricSpec"))?;
            Ok(response
                .into_inner()
                .metric_specs
                .into_iter()
                .map(|s| MetricSpec {
                    metric_name: s.metric_name,
                    target_size: s.target_size,
                    target_size_float: s.target_size_float,
                })
                .collect())
        }
        .boxed()
    }

    fn get_metrics(
        &self,
        so: &ScaledObjectRef,
        metric_name: &str,
    ) -> BoxFuture<'static, Result<Vec<MetricValue>, ScalerError>> {
        let mut client = self.client.clone();
        let request = proto::GetMetricsRequest {
            scaled_object_ref: Some(to_proto(so)),
            metric_name: metric_name.to_owned(),
        };
        async move {
            let response = client
                .get_metrics(request)
                .await
                .map_err(rpc_error("GetMetrics"))?;
            Ok(response
                .into_inner()
                .metric_values
                .into_iter()
                .map(|v| MetricValue {
                    metric_name: v.metric_name,
                    metric_value: v.metric_value,
                    metric_value_float: v.metric_value_float,
                })
                .collect())
        }
        .boxed()
    }
}
