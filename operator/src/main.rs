//! The `keda-http-operator` binary: parse settings, set up logging, run the operator until
//! SIGTERM or SIGINT. Invalid settings exit with status 64 and one line naming the setting.

use std::process::ExitCode;

use anyhow::Context as _;
use keda_http_operator::{Args, Config};
use keda_http_runtime::logging::{self, LogStream};
use keda_http_runtime::{config, signal};

fn main() -> ExitCode {
    let args: Args = config::or_exit("keda-http-operator", config::from_process());
    let (config, warnings) =
        match Config::from_args_and_env(&args, &|name| std::env::var(name).ok()) {
            Ok(parsed) => parsed,
            // The logger is not set up yet and this must be one plain line.
            Err(error) => config::exit_invalid(
                "keda-http-operator",
                &format!("invalid configuration: {error}"),
            ),
        };
    // Certificates given by the user are configuration too: check them before anything runs.
    if let Some(dir) = config
        .metrics_cert_dir
        .as_deref()
        .filter(|_| config.metrics_secure)
        && let Err(error) = keda_http_operator::metrics_access::tls_config(Some(dir))
    {
        config::exit_invalid(
            "keda-http-operator",
            &format!("invalid configuration: {error}"),
        );
    }
    logging::init(&config.log, LogStream::Stderr);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "operator stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster config or KUBECONFIG)")?;
    keda_http_operator::run(config, client, shutdown_signal()).await?;
    tracing::info!("operator stopped");
    Ok(())
}

async fn shutdown_signal() {
    signal::shutdown().await;
    tracing::info!("shutdown requested");
}
