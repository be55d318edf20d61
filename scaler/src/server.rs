//! Assembles the scaler: poll loop, push subscriptions, health, and the gRPC server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::aggregate::QueueState;
use crate::discovery::Interceptors;
use crate::fetch::QueueClient;
use crate::grpc::ScalerService;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::pinger::Pinger;
use crate::proto::external_scaler_server::ExternalScalerServer;
use crate::push::PushSubscriptions;
use crate::targets::ScaledTargets;
use crate::telemetry::TraceLayer;

/// Timing and behaviour of a scaler.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Poll tick (`KEDA_HTTP_QUEUE_TICK_DURATION`).
    pub tick: Duration,
    /// Per-pod `/queue` timeout.
    pub fetch_timeout: Duration,
    /// `StreamIsActive` interval (`KEDA_HTTP_SCALER_STREAM_INTERVAL_MS`).
    pub stream_interval: Duration,
    /// Follow `/queue/watch` push streams.
    pub push: bool,
    /// Bound on the graceful drain of open calls at shutdown.
    pub drain_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            fetch_timeout: Duration::from_millis(500),
            stream_interval: Duration::from_millis(200),
            push: true,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Errors of a running scaler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A configured scaler, ready to serve.
pub struct Scaler {
    settings: Settings,
    interceptors: watch::Receiver<Interceptors>,
    targets: Arc<dyn ScaledTargets>,
    metrics: Metrics,
    state: Arc<QueueState>,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
}

impl std::fmt::Debug for Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scaler")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Scaler {
    /// A scaler over the interceptors in `interceptors` and the objects in `targets`, whose
    /// metrics go to `metrics` (see [`Metrics::register`]).
    pub fn new(
        settings: Settings,
        interceptors: watch::Receiver<Interceptors>,
        targets: Arc<dyn ScaledTargets>,
        metrics: Metrics,
    ) -> Self {
        Self {
            settings,
            interceptors,
            targets,
            metrics,
            state: Arc::new(QueueState::new()),
            tracer: None,
        }
    }

    /// Traces every gRPC call with `tracer` (none: no span work).
    #[must_use]
    pub fn with_tracer(mut self, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// The aggregate this scaler answers from (for inspection in tests and harnesses).
    pub fn state(&self) -> Arc<QueueState> {
        Arc::clone(&self.state)
    }

    /// Serves gRPC on `listener` until `shutdown` completes, then: health NOT_SERVING, open
    /// `StreamIsActive` streams end, the server stops accepting and drains open calls for at
    /// most the drain timeout, and the background tasks stop.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let background = CancellationToken::new();
        let streams = CancellationToken::new();
        let client = QueueClient::new(self.settings.fetch_timeout);
        let (health, health_service) = Health::new().await;

        let pinger = Pinger {
            state: Arc::clone(&self.state),
            client: client.clone(),
            interceptors: self.interceptors.clone(),
            tick: self.settings.tick,
            fetch_timeout: self.settings.fetch_timeout,
            metrics: self.metrics.clone(),
            health: health.clone(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(pinger.run(background.clone()));
        if self.settings.push {
            let push = PushSubscriptions {
                state: Arc::clone(&self.state),
                client,
                interceptors: self.interceptors.clone(),
                silence_timeout: self
                    .settings
                    .tick
                    .saturating_mul(3)
                    .max(Duration::from_secs(2)),
            };
            tasks.spawn(push.run(background.clone()));
        }

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let service = ScalerService::new(
            Arc::clone(&self.state),
            Arc::clone(&self.targets),
            self.settings.stream_interval,
            streams.clone(),
        );

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .layer(TraceLayer::new(self.tracer.clone()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(ExternalScalerServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            });
        tokio::pin!(server);
        tokio::pin!(shutdown);
        let result = tokio::select! {
            result = &mut server => result.map_err(Error::from),
            () = &mut shutdown => {
                tracing::info!("shutting down: health NOT_SERVING, draining open calls");
                health.shut_down().await;
                streams.cancel();
                let _ = stop_tx.send(());
                match tokio::time::timeout(self.settings.drain_timeout, &mut server).await {
                    Ok(result) => result.map_err(Error::from),
                    Err(_) => {
                        tracing::warn!("drain timeout: closing the remaining calls");
                        Ok(())
                    }
                }
            }
        };
        background.cancel();
        while tasks.join_next().await.is_some() {}
        result
    }
}
