//! The `hello` binary: parse the config (an invalid setting exits 64 with one line), serve
//! until SIGTERM, exit 0.

use keda_http_runtime::config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: hello::Config = config::or_exit("hello", config::from_process());
    hello::telemetry::init(config.log_format);
    let server = hello::Server::bind(&config).await?;
    tracing::info!(addr = %server.local_addr(), "hello listening");
    hello::server::serve_until_signal(server, config.shutdown_delay()).await?;
    tracing::info!("hello stopped");
    Ok(())
}
