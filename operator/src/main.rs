//! The `keda-http-operator` binary.
use clap::Parser;

/// keda-http operator (work in progress).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
