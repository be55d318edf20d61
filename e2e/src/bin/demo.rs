//! `demo`: the whole system on this machine, scaling the hello app 0 → N → 0 (see
//! `keda_http_e2e::demo`). Exits 0 when the load had no failed request and the app returned
//! to zero, 1 otherwise.

use std::time::Duration;

use clap::Parser;
use keda_http_e2e::demo::{self, DemoOptions, manifests::HelloValues};

/// The seed's walk-through on one machine: cold start, load with a live timeline, scale to zero.
#[derive(Parser, Debug)]
#[command(name = "demo")]
struct Args {
    /// Requests per second during the load phase.
    #[arg(long, env = "DEMO_RATE", default_value_t = 20.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, env = "DEMO_DURATION", default_value_t = 20)]
    duration: u64,
    /// Milliseconds each hello request takes (the chart's app.delayMs).
    #[arg(long, env = "DEMO_DELAY_MS", default_value_t = 200)]
    delay_ms: u32,
    /// Target in-flight requests per replica (the chart's scaling.targetConcurrency).
    #[arg(long, env = "DEMO_TARGET_CONCURRENCY", default_value_t = 2)]
    target_concurrency: u32,
    /// Seconds without traffic before scaling to zero (the chart's scaling.cooldownPeriod).
    #[arg(long, env = "DEMO_COOLDOWN", default_value_t = 10)]
    cooldown: u32,
    /// Do not run `cargo build` first (use the binaries already in the binary directory).
    #[arg(long)]
    no_build: bool,
    /// Show the product binaries' logs.
    #[arg(long, short)]
    verbose: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = DemoOptions {
        rate: args.rate,
        duration: Duration::from_secs(args.duration),
        values: HelloValues {
            delay_ms: args.delay_ms,
            target_concurrency: args.target_concurrency,
            cooldown_seconds: args.cooldown,
            ..HelloValues::default()
        },
        build: !args.no_build,
        verbose: args.verbose,
        ..DemoOptions::default()
    };
    let mut out = std::io::stdout();
    let summary = demo::run(options, &mut out).await?;
    if summary.errors > 0 || summary.to_zero.is_none() || summary.max_replicas < 1 {
        std::process::exit(1);
    }
    Ok(())
}
