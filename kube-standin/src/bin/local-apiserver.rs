//! `local-apiserver`: the in-memory Kubernetes API stand-in as a process. Writes a kubeconfig
//! for it, applies any `--manifest` files, and serves until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kube_standin::{LocalApiServer, ServerConfig};

#[derive(Debug, Parser)]
#[command(about = "In-memory Kubernetes API server for local testing")]
struct Args {
    /// Listen address (port 0 picks a free port).
    #[arg(long, env = "LOCAL_APISERVER_ADDR", default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Bearer token clients must present (random when unset).
    #[arg(long, env = "LOCAL_APISERVER_TOKEN")]
    token: Option<String>,
    /// Where to write the kubeconfig for this server.
    #[arg(long, env = "LOCAL_APISERVER_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Retained watch events (older resourceVersions get 410 Gone).
    #[arg(long, env = "LOCAL_APISERVER_HISTORY", default_value_t = 8192)]
    history: usize,
    /// YAML manifests to server-side apply at start (CRDs, seed objects); repeatable.
    #[arg(
        long = "manifest",
        env = "LOCAL_APISERVER_MANIFESTS",
        value_delimiter = ','
    )]
    manifests: Vec<PathBuf>,
    /// Seconds between bookmarks on idle watches.
    #[arg(long, env = "LOCAL_APISERVER_BOOKMARK_SECONDS", default_value_t = 10)]
    bookmark_seconds: u64,
    /// Accept loopback addresses in EndpointSlices (a real API server refuses them).
    #[arg(long, env = "LOCAL_APISERVER_ALLOW_LOOPBACK_ENDPOINTS")]
    allow_loopback_endpoints: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = ServerConfig {
        addr: args.addr,
        history_capacity: args.history,
        bookmark_interval: Duration::from_secs(args.bookmark_seconds.max(1)),
        allow_loopback_endpoints: args.allow_loopback_endpoints,
        ..ServerConfig::default()
    };
    if let Some(token) = args.token {
        config.token = token;
    }
    let server = LocalApiServer::start_with(config).await?;
    for path in &args.manifests {
        let yaml = std::fs::read_to_string(path)
            .with_context(|| format!("read manifest {}", path.display()))?;
        let applied = server
            .apply_manifests(&yaml, "local-apiserver")
            .with_context(|| format!("apply manifest {}", path.display()))?;
        tracing::info!(manifest = %path.display(), objects = applied.len(), "manifest applied");
    }
    let kubeconfig = match args.kubeconfig {
        Some(path) => {
            std::fs::write(&path, server.kubeconfig_yaml())
                .with_context(|| format!("write {}", path.display()))?;
            path
        }
        None => server.kubeconfig_path().to_path_buf(),
    };
    tracing::info!(url = %server.url(), kubeconfig = %kubeconfig.display(), "local API server ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown();
    Ok(())
}
