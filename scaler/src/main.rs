//! The `keda-http-scaler` binary.
use clap::Parser;

/// keda-http scaler (work in progress).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
