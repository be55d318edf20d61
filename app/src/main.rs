//! The `hello` binary: parse the config, serve until SIGTERM, exit 0.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = hello::Config::parse();
    hello::telemetry::init(config.log_format);
    let server = hello::Server::bind(&config).await?;
    tracing::info!(addr = %server.local_addr(), "hello listening");
    hello::server::serve_until_signal(server, config.shutdown_delay()).await?;
    tracing::info!("hello stopped");
    Ok(())
}
