//! Logging set-up: `tracing` with an `EnvFilter` (`RUST_LOG` wins), JSON or console lines, no
//! ANSI colour codes unless the log stream is a terminal, and the controller-runtime `--zap-*`
//! flags mapped as zap reads them.
//!
//! `--zap-log-level` takes `debug`, `info`, `warn`, `error`, `dpanic`, `panic`, `fatal` or an
//! integer N > 0, which zap turns into level -N: more verbose than info (1 is debug, 2 and
//! more are finer, which `tracing` calls trace). A value that is none of these but a valid
//! `tracing` filter (`keda_http_scaler=debug`) is kept as a filter, as before. `--zap-devel`
//! makes debug the default level and console the default encoder. Flags we cannot honour
//! (`--zap-stacktrace-level`, `--zap-time-encoding`) are accepted and named in one WARN line
//! at start.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Log output format (`--zap-encoder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Console,
}

impl LogFormat {
    /// Parses `json` or `console` (for clap's `value_parser`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "console" => Ok(Self::Console),
            other => Err(format!("invalid encoder {other:?} (use json or console)")),
        }
    }
}

/// A `--zap-log-level` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZapLevel {
    /// A zap level: -1 debug, 0 info, 1 warn, 2 error, 3 dpanic, 4 panic, 5 fatal; an integer
    /// flag N > 0 is level -N.
    Level(i16),
    /// Not a zap level but a `tracing` filter directive, kept as given.
    Filter(String),
}

impl ZapLevel {
    /// Parses a flag value as controller-runtime does, then as a `tracing` filter.
    pub fn parse(s: &str) -> Result<Self, String> {
        let named = match s.to_ascii_lowercase().as_str() {
            "debug" => Some(-1),
            "info" => Some(0),
            "warn" => Some(1),
            "error" => Some(2),
            "dpanic" => Some(3),
            "panic" => Some(4),
            "fatal" => Some(5),
            _ => None,
        };
        if let Some(level) = named {
            return Ok(Self::Level(level));
        }
        if let Ok(n) = s.parse::<i64>() {
            return match i16::try_from(n) {
                Ok(n) if n > 0 => Ok(Self::Level(-n)),
                _ => Err(format!(
                    "invalid log level {s:?} (use debug, info, warn, error, dpanic, panic, fatal or an integer > 0)"
                )),
            };
        }
        match EnvFilter::try_new(s) {
            Ok(_) => Ok(Self::Filter(s.to_owned())),
            Err(e) => Err(format!(
                "invalid log level {s:?} (use debug, info, warn, error, dpanic, panic, fatal, an integer > 0 or a tracing filter): {e}"
            )),
        }
    }

    /// The `tracing` filter directive this level stands for.
    pub fn directive(&self) -> String {
        match self {
            Self::Level(level) => level_filter(*level).to_string().to_ascii_lowercase(),
            Self::Filter(filter) => filter.clone(),
        }
    }
}

/// The `tracing` level that shows what zap level `level` shows.
fn level_filter(level: i16) -> LevelFilter {
    match level {
        i16::MIN..=-2 => LevelFilter::TRACE,
        -1 => LevelFilter::DEBUG,
        0 => LevelFilter::INFO,
        1 => LevelFilter::WARN,
        _ => LevelFilter::ERROR,
    }
}

/// The controller-runtime zap flags; flatten into a binary's config with
/// `#[command(flatten)]`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ZapFlags {
    /// Log level: debug, info, warn, error, dpanic, panic, fatal, or an integer N > 0 for zap
    /// level -N (more verbose than info: 1 is debug); a tracing filter is also accepted.
    /// RUST_LOG wins when set.
    #[arg(long = "zap-log-level", value_parser = ZapLevel::parse)]
    pub zap_log_level: Option<ZapLevel>,

    /// Log encoder: json or console.
    #[arg(long = "zap-encoder", value_parser = LogFormat::parse)]
    pub zap_encoder: Option<LogFormat>,

    /// Development mode: debug level and console encoder unless set otherwise (Go form:
    /// `--zap-devel` or `--zap-devel=false`).
    #[arg(long = "zap-devel", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = crate::config::go_bool)]
    pub zap_devel: Option<bool>,

    /// Accepted for compatibility; no effect (a warning is logged).
    #[arg(long = "zap-stacktrace-level")]
    pub zap_stacktrace_level: Option<String>,

    /// Accepted for compatibility; no effect (timestamps are RFC 3339; a warning is logged).
    #[arg(long = "zap-time-encoding")]
    pub zap_time_encoding: Option<String>,
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard error (zap's default).
    Stderr,
    /// Standard output.
    Stdout,
}

/// What [`init`] installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Line format.
    pub format: LogFormat,
    /// Default filter directive when `RUST_LOG` is unset.
    pub filter: String,
    /// Flags that were given but have no effect: (flag, why), each logged once at start.
    pub ignored: Vec<(&'static str, &'static str)>,
}

impl ZapFlags {
    /// The settings these flags ask for, with `default_format` when neither `--zap-encoder`
    /// nor `--zap-devel` chooses one.
    pub fn settings(&self, default_format: LogFormat) -> LogSettings {
        let devel = self.zap_devel == Some(true);
        let format = self.zap_encoder.unwrap_or(if devel {
            LogFormat::Console
        } else {
            default_format
        });
        let level = self
            .zap_log_level
            .clone()
            .unwrap_or(ZapLevel::Level(if devel { -1 } else { 0 }));
        let mut ignored = Vec::new();
        if self.zap_stacktrace_level.is_some() {
            ignored.push((
                "--zap-stacktrace-level",
                "stack traces are not recorded by this program",
            ));
        }
        if self.zap_time_encoding.is_some() {
            ignored.push(("--zap-time-encoding", "timestamps are always RFC 3339"));
        }
        LogSettings {
            format,
            filter: level.directive(),
            ignored,
        }
    }
}

/// Installs the global subscriber writing to `stream`; a second call is ignored. Logs one
/// WARN line per ignored flag.
pub fn init(settings: &LogSettings, stream: LogStream) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match (stream, settings.format) {
        (LogStream::Stderr, LogFormat::Json) => {
            builder.json().with_writer(std::io::stderr).try_init()
        }
        (LogStream::Stderr, LogFormat::Console) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
        (LogStream::Stdout, LogFormat::Json) => builder.json().try_init(),
        (LogStream::Stdout, LogFormat::Console) => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
    for (flag, why) in &settings.ignored {
        tracing::warn!(flag, "{flag} has no effect: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(s: &str) -> String {
        ZapLevel::parse(s).expect(s).directive()
    }

    #[test]
    fn named_levels_map_as_zap() {
        assert_eq!(directive("debug"), "debug");
        assert_eq!(directive("info"), "info");
        assert_eq!(directive("warn"), "warn");
        assert_eq!(directive("error"), "error");
        assert_eq!(directive("dpanic"), "error");
        assert_eq!(directive("panic"), "error");
        assert_eq!(directive("fatal"), "error");
        assert_eq!(directive("DEBUG"), "debug");
    }

    #[test]
    fn numeric_levels_are_more_verbose_than_info() {
        assert_eq!(directive("1"), "debug");
        assert_eq!(directive("2"), "trace");
        assert_eq!(directive("10"), "trace");
    }

    #[test]
    fn zero_negative_and_garbage_levels_are_rejected() {
        for bad in ["0", "-1", "99999", "scaler=loud"] {
            assert!(ZapLevel::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tracing_filters_are_kept() {
        assert_eq!(
            directive("keda_http_scaler=debug,info"),
            "keda_http_scaler=debug,info"
        );
    }

    #[test]
    fn encoder_names() {
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse("console"), Ok(LogFormat::Console));
        assert!(LogFormat::parse("xml").is_err());
    }

    #[test]
    fn defaults_and_devel_mode() {
        let plain = ZapFlags::default().settings(LogFormat::Json);
        assert_eq!(plain.format, LogFormat::Json);
        assert_eq!(plain.filter, "info");
        assert!(plain.ignored.is_empty());
        let devel = ZapFlags {
            zap_devel: Some(true),
            ..ZapFlags::default()
        }
        .settings(LogFormat::Json);
        assert_eq!(devel.format, LogFormat::Console);
        assert_eq!(devel.filter, "debug");
        let explicit = ZapFlags {
            zap_devel: Some(true),
            zap_encoder: Some(LogFormat::Json),
            zap_log_level: Some(ZapLevel::Level(2)),
            ..ZapFlags::default()
        }
        .settings(LogFormat::Console);
        assert_eq!(explicit.format, LogFormat::Json);
        assert_eq!(explicit.filter, "error");
    }

    #[test]
    fn flags_without_effect_are_reported() {
        let s = ZapFlags {
            zap_stacktrace_level: Some("error".into()),
            zap_time_encoding: Some("rfc3339".into()),
            ..ZapFlags::default()
        }
        .settings(LogFormat::Console);
        let flags: Vec<&str> = s.ignored.iter().map(|(f, _)| *f).collect();
        assert_eq!(flags, ["--zap-stacktrace-level", "--zap-time-encoding"]);
    }
}
