//! The `keda-http-interceptor` binary.
use clap::Parser;

/// keda-http interceptor (work in progress).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
