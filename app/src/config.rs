//! Configuration: every flag also comes from an environment variable (`PORT`, `DELAY_MS`, ...).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::telemetry::LogFormat;

/// The default cap on any artificial delay: 30 seconds.
pub const DEFAULT_MAX_DELAY_MS: u64 = 30_000;

/// Settings of the hello app.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "hello",
    version,
    about = "The hello app that keda-http's examples scale."
)]
pub struct Config {
    /// TCP port to serve HTTP/1.1 and h2c on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, env = "BIND_ADDRESS", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind_address: IpAddr,

    /// Artificial delay before each hello response, in milliseconds. A `?delay_ms=` query
    /// parameter overrides it per request.
    #[arg(long, env = "DELAY_MS", default_value_t = 0)]
    pub delay_ms: u64,

    /// Upper bound on any artificial delay (from `DELAY_MS` or the query), in milliseconds.
    /// Longer requested delays are cut to this; the applied value is sent back in the
    /// `x-hello-delay-ms` response header.
    #[arg(long, env = "MAX_DELAY_MS", default_value_t = DEFAULT_MAX_DELAY_MS)]
    pub max_delay_ms: u64,

    /// After SIGTERM, how long to keep serving (with `/healthz` answering 503) before the
    /// listener closes, in milliseconds; covers the time the interceptor and load balancers
    /// take to notice that the pod is terminating.
    #[arg(long, env = "SHUTDOWN_DELAY_MS", default_value_t = 0)]
    pub shutdown_delay_ms: u64,

    /// After SIGTERM, how long in-flight requests may take to finish, in milliseconds.
    #[arg(long, env = "DRAIN_TIMEOUT_MS", default_value_t = 30_000)]
    pub drain_timeout_ms: u64,

    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Console)]
    pub log_format: LogFormat,
}

impl Config {
    /// A config for tests and embedding: `127.0.0.1:0`, no delay, the default cap.
    pub fn local() -> Self {
        Self {
            port: 0,
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            delay_ms: 0,
            max_delay_ms: DEFAULT_MAX_DELAY_MS,
            shutdown_delay_ms: 0,
            drain_timeout_ms: 30_000,
            log_format: LogFormat::Console,
        }
    }

    /// The socket address to bind.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.port)
    }

    /// The delay to apply for a request that asked for `requested_ms` (or the default
    /// `DELAY_MS` when it asked for nothing), after the cap.
    pub fn effective_delay_ms(&self, requested_ms: Option<u64>) -> u64 {
        requested_ms.unwrap_or(self.delay_ms).min(self.max_delay_ms)
    }

    /// The shutdown delay as a [`Duration`].
    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_millis(self.shutdown_delay_ms)
    }

    /// The drain bound as a [`Duration`].
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_docs() {
        let c: Config = keda_http_runtime::config::parse_from(["hello"], &|_| None).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.delay_ms, 0);
        assert_eq!(c.max_delay_ms, 30_000);
        assert_eq!(c.shutdown_delay_ms, 0);
    }

    #[test]
    fn settings_come_from_the_given_variables() {
        let env = |name: &str| match name {
            "PORT" => Some("9000".to_owned()),
            "DELAY_MS" => Some("25".to_owned()),
            "LOG_FORMAT" => Some("json".to_owned()),
            _ => None,
        };
        let c: Config = keda_http_runtime::config::parse_from(["hello"], &env).unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.delay_ms, 25);
        assert_eq!(c.log_format, LogFormat::Json);
        let bad = |name: &str| (name == "PORT").then(|| "eighty".to_owned());
        let err = keda_http_runtime::config::parse_from::<Config, _, _>(["hello"], &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("PORT (--port)"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn delay_is_capped_and_query_overrides_default() {
        let c = Config {
            delay_ms: 50,
            max_delay_ms: 100,
            ..Config::local()
        };
        assert_eq!(c.effective_delay_ms(None), 50);
        assert_eq!(c.effective_delay_ms(Some(7)), 7);
        assert_eq!(c.effective_delay_ms(Some(0)), 0);
        assert_eq!(c.effective_delay_ms(Some(10_000)), 100);
        let slow = Config { delay_ms: 500, ..c };
        assert_eq!(slow.effective_delay_ms(None), 100);
    }
}
