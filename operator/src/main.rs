//! The `keda-http-operator` binary: parse settings, set up logging, run the operator until
//! SIGTERM or SIGINT. Invalid settings exit with status 64 and one line naming the setting.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use clap::error::ErrorKind;
use keda_http_operator::config::{LogConfig, LogFormat};
use keda_http_operator::{Args, Config};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => match error.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => error.exit(),
            _ => {
                let rendered = error.to_string();
                let line = rendered.lines().next().unwrap_or_default();
                let line = line.strip_prefix("error: ").unwrap_or(line);
                eprintln!("keda-http-operator: invalid flags: {line}");
                return ExitCode::from(64);
            }
        },
    };
    let (config, warnings) =
        match Config::from_args_and_env(&args, &|name| std::env::var(name).ok()) {
            Ok(parsed) => parsed,
            Err(error) => {
                // The logger is not set up yet and this must be one plain line.
                eprintln!("keda-http-operator: invalid configuration: {error}");
                return ExitCode::from(64);
            }
        };
    // Certificates given by the user are configuration too: check them before anything runs.
    if let Some(dir) = config
        .metrics_cert_dir
        .as_deref()
        .filter(|_| config.metrics_secure)
        && let Err(error) = keda_http_operator::metrics_access::tls_config(Some(dir))
    {
        eprintln!("keda-http-operator: invalid configuration: {error}");
        return ExitCode::from(64);
    }
    init_logging(&config.log);
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
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested");
}

fn init_logging(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Console => builder.init(),
    }
}
