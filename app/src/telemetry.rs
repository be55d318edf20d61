//! Log output: `tracing` with an `EnvFilter` from `RUST_LOG` (default `info`), console or JSON,
//! on stdout, set up by `keda_http_runtime::logging`.

use keda_http_runtime::logging::{self, LogSettings, LogStream};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Console,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(format: LogFormat) {
    let format = match format {
        LogFormat::Console => logging::LogFormat::Console,
        LogFormat::Json => logging::LogFormat::Json,
    };
    let settings = LogSettings {
        format,
        filter: "info".to_owned(),
        ignored: Vec::new(),
    };
    logging::init(&settings, LogStream::Stdout);
}
