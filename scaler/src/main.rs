//! The `keda-http-scaler` binary: configuration, logging, Kubernetes watches, then the scaler
//! until SIGTERM or Ctrl-C.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use keda_http_runtime::logging::{self, LogFormat, LogStream};
use keda_http_runtime::otel::metrics::MetricsPush;
use keda_http_runtime::otel::traces::Tracing;
use keda_http_runtime::{config, signal};
use keda_http_scaler::config::Config;
use keda_http_scaler::metrics::{self, Metrics};
use keda_http_scaler::targets::KubeTargets;
use keda_http_scaler::{Scaler, Settings, discovery, telemetry};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long start-up waits for the first list of InterceptorRoutes and HTTPScaledObjects.
const TARGETS_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn main() -> ExitCode {
    let config = config::or_exit("keda-http-scaler", Config::from_process());
    // Logs go to stdout, as they always have for the scaler.
    logging::init(&config.zap.settings(LogFormat::Console), LogStream::Stdout);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "scaler failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let otel = telemetry::settings(&config).context("OpenTelemetry settings")?;
    let tracing_pipeline = if otel.traces_enabled {
        Some(Tracing::start(&otel, telemetry::SCOPE).context("starting the trace exporter")?)
    } else {
        None
    };
    let grpc = bind(config.bind_address, config.port)
        .await
        .with_context(|| format!("binding the gRPC port {}", config.port))?;
    let metrics_listener = if config.prometheus_enabled {
        Some(
            bind(config.bind_address, config.prometheus_port)
                .await
                .with_context(|| format!("binding the metrics port {}", config.prometheus_port))?,
        )
    } else {
        None
    };

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let (interceptors, discovery_task) =
        discovery::watch_endpoint_slices(client.clone(), config.admin_service());
    let invalid_objects = keda_http_runtime::watch::InvalidObjects::default();
    let (targets, targets_task) = KubeTargets::watch_counted(client, invalid_objects.clone());
    let discovery_task = tokio::spawn(discovery_task);
    let targets_task = tokio::spawn(targets_task);
    // Answer KEDA from a listed cache, so a restart does not report "not found" for objects
    // that exist; but never wait forever (e.g. CRDs not installed yet).
    if tokio::time::timeout(TARGETS_SYNC_WAIT, targets.wait_until_ready())
        .await
        .is_err()
    {
        tracing::warn!(
            wait = ?TARGETS_SYNC_WAIT,
            "InterceptorRoutes/HTTPScaledObjects not listed yet; serving anyway"
        );
    }

    let mut registry = Registry::default();
    let scaler_metrics = Metrics::register(&mut registry);
    invalid_objects.register_in(&mut registry);
    if let Some(pipeline) = &tracing_pipeline {
        registry.register(
            "scaler_otel_dropped_spans",
            "Spans dropped because their export to the OTLP collector failed",
            pipeline.dropped_spans(),
        );
    }
    let registry = Arc::new(registry);
    let shutdown = CancellationToken::new();
    let otlp_metrics = if otel.metrics_enabled {
        let push = MetricsPush::new(&otel, telemetry::SCOPE, Arc::clone(&registry))
            .context("starting the OTLP metrics push")?;
        Some(tokio::spawn(push.run(shutdown.clone())))
    } else {
        None
    };
    let metrics_task = metrics_listener.map(|listener| {
        let stop = shutdown.clone();
        tokio::spawn(metrics::serve(
            listener,
            Arc::clone(&registry),
            async move {
                stop.cancelled().await;
            },
        ))
    });

    let settings = Settings {
        tick: config.queue_tick_duration,
        fetch_timeout: config.fetch_timeout(),
        stream_interval: config.stream_interval(),
        push: config.push,
        drain_timeout: config.drain_timeout,
    };
    tracing::info!(
        addr = %grpc.local_addr().context("gRPC listener address")?,
        namespace = %config.target_admin_namespace,
        service = %config.target_admin_service,
        tick = ?settings.tick,
        push = settings.push,
        "keda-http-scaler serving"
    );
    let scaler = Scaler::new(settings, interceptors, Arc::new(targets), scaler_metrics)
        .with_tracer(tracing_pipeline.as_ref().map(|p| p.tracer().clone()));
    let signal = shutdown.clone();
    let result = scaler
        .serve(grpc, async move {
            signal::shutdown().await;
            signal.cancel();
        })
        .await;
    shutdown.cancel();
    discovery_task.abort();
    targets_task.abort();
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    if let Some(task) = otlp_metrics {
        let _ = task.await;
    }
    if let Some(pipeline) = tracing_pipeline {
        // The SDK's shutdown blocks its caller while the export runs on this runtime.
        let _ = tokio::task::spawn_blocking(move || pipeline.shutdown()).await;
    }
    result.context("serving gRPC")
}

/// Binds `port` on `address`, or on every address like Go's `:port`: IPv6 `[::]` (dual-stack
/// on Linux), or IPv4 `0.0.0.0` where IPv6 is unavailable.
async fn bind(address: Option<IpAddr>, port: u16) -> std::io::Result<TcpListener> {
    if let Some(ip) = address {
        return TcpListener::bind(SocketAddr::new(ip, port)).await;
    }
    match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await {
        Ok(listener) => Ok(listener),
        Err(_) => TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).await,
    }
}
