//! The `keda-http-interceptor` binary: parse settings, set up logging, watch Kubernetes
//! (KUBECONFIG or in-cluster) for routes, endpoints and bodies (or, with
//! `KEDA_HTTP_ROUTES_FILE`/`KEDA_HTTP_ENDPOINTS_FILE`, read them from files), serve until
//! SIGTERM/SIGINT.

use std::sync::Arc;

use anyhow::Context as _;
use keda_http_interceptor::config::{Config, LogFormat};
use keda_http_interceptor::endpoints::StaticEndpoints;
use keda_http_interceptor::watches::{KubeWatches, RoutingRefresh};
use keda_http_interceptor::{Interceptor, files};
use keda_http_runtime::logging::{self, LogStream};
use keda_http_runtime::{config, signal};
use tokio_util::sync::CancellationToken;

fn main() {
    let config = config::or_exit(
        "keda-http-interceptor",
        Config::from_env().and_then(keda_http_interceptor::upstream_tls::validated),
    );
    logging::init(&config.zap.settings(LogFormat::Console), LogStream::Stderr);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(run(config)) {
        tracing::error!(error = format!("{error:#}"), "interceptor failed");
        std::process::exit(1);
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    if config.routes_file.is_some() || config.endpoints_file.is_some() {
        return run_from_files(config).await;
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or in-cluster)")?;
    let watches = KubeWatches::new(client, &config.watch_namespace);
    let refresh_interval = config.routing_table_refresh_interval;
    let max_staleness = config.routing_table_max_staleness;
    let interceptor = Interceptor::bind_with(config, watches.endpoints(), watches.bodies())
        .await
        .context("starting the interceptor")?;
    let addrs = interceptor.addrs();
    tracing::info!(proxy = %addrs.proxy, admin = %addrs.admin, metrics = ?addrs.metrics, "listening; routes from Kubernetes");
    let stop = CancellationToken::new();
    watches
        .refresh(RoutingRefresh {
            interval: refresh_interval,
            max_staleness,
            lifecycle: interceptor.lifecycle(),
        })
        .count_invalid_in(interceptor.invalid_objects())
        .spawn(interceptor.routes(), stop.clone());
    let result = interceptor.run(signal::shutdown()).await;
    stop.cancel();
    result?;
    Ok(())
}

/// Routes and endpoints from the JSON files (our addition, for running without Kubernetes).
async fn run_from_files(config: Config) -> anyhow::Result<()> {
    let endpoints = Arc::new(StaticEndpoints::default());
    if let Some(path) = &config.endpoints_file {
        let n = files::load_endpoints(path, &endpoints)?;
        tracing::info!(targets = n, path = %path.display(), "loaded endpoints file");
    }
    let routes_file = config.routes_file.clone();
    let interceptor = Interceptor::bind(config, endpoints)
        .await
        .context("starting the interceptor")?;
    let addrs = interceptor.addrs();
    tracing::info!(proxy = %addrs.proxy, admin = %addrs.admin, metrics = ?addrs.metrics, "listening; routes from files");
    let (routes, httpsos) = match &routes_file {
        Some(path) => files::load_routes(path)?,
        None => (Vec::new(), Vec::new()),
    };
    let report = interceptor.routes().install(routes, httpsos).await;
    tracing::info!(
        routes = report.routes,
        skipped = report.shadowed,
        "routing table installed"
    );
    interceptor.run(signal::shutdown()).await?;
    Ok(())
}
