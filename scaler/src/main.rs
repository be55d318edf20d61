//! The `keda-http-scaler` binary: configuration, logging, Kubernetes watches, then the scaler
//! until SIGTERM or Ctrl-C.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use keda_http_scaler::config::{Config, ConfigError};
use keda_http_scaler::metrics::{self, Metrics};
use keda_http_scaler::targets::KubeTargets;
use keda_http_scaler::{Scaler, Settings, discovery};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Exit status for invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// How long start-up waits for the first list of InterceptorRoutes and HTTPScaledObjects.
const TARGETS_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn main() -> ExitCode {
    let config = match Config::parse_from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(ConfigError::Display(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Invalid(line)) => {
            eprintln!("{line}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_tracing(&config);
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

fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    if config.otlp_metrics_enabled || config.otlp_traces_enabled {
        tracing::warn!("OTLP export is not implemented by this scaler; use /metrics and logs");
    }
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
    let (targets, targets_task) = KubeTargets::watch(client);
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
    let registry = Arc::new(registry);
    let shutdown = CancellationToken::new();
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
    let scaler = Scaler::new(settings, interceptors, Arc::new(targets), scaler_metrics);
    let signal = shutdown.clone();
    let result = scaler
        .serve(grpc, async move {
            wait_for_signal().await;
            signal.cancel();
        })
        .await;
    shutdown.cancel();
    discovery_task.abort();
    targets_task.abort();
    if let Some(task) = metrics_task {
        let _ = task.await;
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

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "listening for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    () = ctrl_c => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "listening for SIGTERM");
                ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
