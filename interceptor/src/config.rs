//! Interceptor settings: every `KEDA_HTTP_*` variable of the official add-on (compat §7.1,
//! including the deprecated aliases and the 0.16 names), each also a `--flag`.
//!
//! [`Config::from_env`] parses the process arguments and environment once at startup.
//! [`Config::parse_from`] does the same over explicit arguments and an explicit variable lookup,
//! so tests never touch the process environment. An invalid value becomes a [`ConfigError`]
//! whose one-line message names the variable; `main` prints it and exits with status 64.
//! The parsing shape, the error and the `--zap-*` flags come from `keda_http_runtime`.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};
use keda_http_api::duration::parse_go_duration;
use keda_http_runtime::config::go_bool;
use keda_http_runtime::logging::ZapFlags;
use keda_http_runtime::otel::OtelArgs;

pub use keda_http_runtime::config::{ConfigError, EXIT_CONFIG};
pub use keda_http_runtime::logging::LogFormat;

/// A Go-syntax duration (`500ms`, `30s`, `1m`).
fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map_err(|e| e.to_string())
}

/// A TLS version as the official variables write it.
fn tls_version(s: &str) -> Result<TlsVersion, String> {
    match s {
        "1.2" => Ok(TlsVersion::Tls12),
        "1.3" => Ok(TlsVersion::Tls13),
        other => Err(format!("invalid TLS version {other:?} (use 1.2 or 1.3)")),
    }
}

/// The OTLP traces protocol, case-insensitive.
fn traces_protocol(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "console" | "http/protobuf" | "grpc" => Ok(lower),
        _ => Err(format!(
            "invalid protocol {s:?} (use console, http/protobuf or grpc)"
        )),
    }
}

/// A TLS protocol version bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// Default `KEDA_HTTP_RETRY_COUNT`: about 5 s of re-dialling a refusing backend.
pub const DEFAULT_RETRY_COUNT: u32 = 100;

/// Every interceptor setting. Field docs are the `--help` text.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "keda-http-interceptor",
    version,
    about = "keda-http interceptor: the HTTP data plane (routing, counting, forwarding)",
    long_about = None,
    mut_arg("zap_encoder", |a| a.help("Log encoder: json or console [default: console]"))
)]
#[allow(clippy::struct_excessive_bools)]
pub struct Config {
    /// Port of the plain proxy listener (HTTP/1.1 and h2c prior knowledge). Required.
    #[arg(long, env = "KEDA_HTTP_PROXY_PORT")]
    pub proxy_port: u16,

    /// Port of the admin listener (/queue, /queue/watch, /readyz, /livez, /routes). Required.
    #[arg(long, env = "KEDA_HTTP_ADMIN_PORT")]
    pub admin_port: u16,

    /// Address every listener binds (our addition; 0.0.0.0 serves all IPv4 interfaces).
    #[arg(long, env = "KEDA_HTTP_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// Namespace the Kubernetes watches are limited to; empty watches all namespaces.
    #[arg(long, env = "KEDA_HTTP_WATCH_NAMESPACE", default_value = "")]
    pub watch_namespace: String,

    /// Accepted for compatibility; no effect: the watches have no periodic resync (a warning is
    /// logged when set).
    #[arg(long, env = "KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD", value_parser = duration)]
    pub informer_resync_period: Option<Duration>,

    /// Start the TLS proxy listener in addition to the plain one.
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_ENABLED", default_value = "false", value_parser = go_bool, action = ArgAction::Set)]
    pub proxy_tls_enabled: bool,

    /// Default serving certificate (PEM).
    #[arg(
        long,
        env = "KEDA_HTTP_PROXY_TLS_CERT_PATH",
        default_value = "/certs/tls.crt"
    )]
    pub proxy_tls_cert_path: PathBuf,

    /// Key of the default serving certificate (PEM).
    #[arg(
        long,
        env = "KEDA_HTTP_PROXY_TLS_KEY_PATH",
        default_value = "/certs/tls.key"
    )]
    pub proxy_tls_key_path: PathBuf,

    /// Comma-separated directories walked for more certificates (X.crt+X.key or X.pem+X-key.pem),
    /// selected by SNI.
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS", default_value = "")]
    pub proxy_tls_cert_store_paths: String,

    /// Port of the TLS proxy listener.
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_PORT", default_value_t = 8443)]
    pub proxy_tls_port: u16,

    /// Skip backend TLS certificate verification (0.16 name; the deprecated KEDA_HTTP_PROXY_TLS_SKIP_VERIFY wins when set).
    #[arg(long, env = "KEDA_HTTP_TLS_SKIP_VERIFY", value_parser = go_bool, action = ArgAction::Set)]
    pub tls_skip_verify: Option<bool>,
    /// Deprecated name of KEDA_HTTP_TLS_SKIP_VERIFY; takes precedence when set.
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_SKIP_VERIFY", value_parser = go_bool, action = ArgAction::Set)]
    pub proxy_tls_skip_verify: Option<bool>,

    /// Minimum TLS version, 1.2 or 1.3 (0.16 name; KEDA_HTTP_PROXY_TLS_MIN_VERSION wins when set).
    #[arg(long, env = "KEDA_HTTP_TLS_MIN_VERSION", value_parser = tls_version)]
    pub tls_min_version: Option<TlsVersion>,
    /// Deprecated name of KEDA_HTTP_TLS_MIN_VERSION; takes precedence when set.
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_MIN_VERSION", value_parser = tls_version)]
    pub proxy_tls_min_version: Option<TlsVersion>,

    /// Maximum TLS version, 1.2 or 1.3 (0.16 name; KEDA_HTTP_PROXY_TLS_MAX_VERSION wins when set).
    #[arg(long, env = "KEDA_HTTP_TLS_MAX_VERSION", value_parser = tls_version)]
    pub tls_max_version: Option<TlsVersion>,
    /// Deprecated name of KEDA_HTTP_TLS_MAX_VERSION; takes precedence when set.
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_MAX_VERSION", value_parser = tls_version)]
    pub proxy_tls_max_version: Option<TlsVersion>,

    /// Comma-separated Go cipher-suite names (0.16 name; KEDA_HTTP_PROXY_TLS_CIPHER_SUITES wins when set).
    #[arg(long, env = "KEDA_HTTP_TLS_CIPHER_SUITES")]
    pub tls_cipher_suites: Option<String>,
    /// Deprecated name of KEDA_HTTP_TLS_CIPHER_SUITES; takes precedence when set.
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_CIPHER_SUITES")]
    pub proxy_tls_cipher_suites: Option<String>,

    /// Comma-separated curve names (0.16 name; KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES wins when set).
    #[arg(long, env = "KEDA_HTTP_TLS_CURVE_PREFERENCES")]
    pub tls_curve_preferences: Option<String>,
    /// Deprecated name of KEDA_HTTP_TLS_CURVE_PREFERENCES; takes precedence when set.
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES")]
    pub proxy_tls_curve_preferences: Option<String>,

    /// Comma-separated directories of PEM CA certificates trusted by backend TLS (used for
    /// requests that arrived on the TLS listener); an unreadable directory exits 64.
    #[arg(long, env = "KEDA_HTTP_TLS_CA_DIRS", default_value = "")]
    pub tls_ca_dirs: String,

    /// Accepted for compatibility; no effect: there is no pprof endpoint (a warning is logged
    /// when set).
    #[arg(long, env = "PROFILING_BIND_ADDRESS", default_value = "")]
    pub profiling_bind_address: String,

    /// Set the X-KEDA-HTTP-Cold-Start response header.
    #[arg(long, env = "KEDA_HTTP_ENABLE_COLD_START_HEADER", default_value = "true", value_parser = go_bool, action = ArgAction::Set)]
    pub enable_cold_start_header: bool,

    /// Write one access-log line per request (Combined Log Format).
    #[arg(long, env = "KEDA_HTTP_LOG_REQUESTS", default_value = "false", value_parser = go_bool, action = ArgAction::Set)]
    pub log_requests: bool,

    /// Bound on draining in-flight and upgraded connections at shutdown; 0 waits forever.
    #[arg(long, env = "KEDA_HTTP_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub drain_timeout: Duration,

    /// Time between SIGTERM (readiness fails) and closing the listeners, while still serving.
    #[arg(long, env = "KEDA_HTTP_SHUTDOWN_DELAY", default_value = "5s", value_parser = duration)]
    pub shutdown_delay: Duration,

    /// Forward to a ready pod address (default, as in v0.16); false forwards to the Service
    /// address `<svc>.<ns>:<port>` once the target has a ready endpoint.
    #[arg(long, env = "KEDA_HTTP_DIRECT_POD_ROUTING", default_value = "true", value_parser = go_bool, action = ArgAction::Set)]
    pub direct_pod_routing: bool,

    /// Total deadline of a request (per-route timeouts.request overrides); 0 means none.
    #[arg(long, env = "KEDA_HTTP_REQUEST_TIMEOUT", default_value = "0s", value_parser = duration)]
    pub request_timeout: Duration,

    /// Time to the upstream's response headers (per-route timeouts.responseHeader overrides); 0 disables.
    #[arg(long, env = "KEDA_HTTP_RESPONSE_HEADER_TIMEOUT", default_value = "300s", value_parser = duration)]
    pub response_header_timeout: Duration,

    /// Cold-start wait bound (30s when a fallback is configured); 0 means none.
    #[arg(long, env = "KEDA_HTTP_READINESS_TIMEOUT", default_value = "0s", value_parser = duration)]
    pub readiness_timeout: Duration,

    /// Timeout of one upstream connect attempt.
    #[arg(long, env = "KEDA_HTTP_CONNECT_TIMEOUT", default_value = "500ms", value_parser = duration)]
    pub connect_timeout: Duration,

    /// Re-dials of one request after a connect failure (refused, reset, connect timeout)
    /// before anything was sent, with a 5–50 ms jittered backoff, rotating over the ready
    /// endpoints, within the request deadline; 0 disables retries. The default (100) covers
    /// about 5 s of a refusing backend.
    #[arg(long, env = "KEDA_HTTP_RETRY_COUNT", default_value_t = DEFAULT_RETRY_COUNT)]
    pub retry_count: u32,

    /// Comma-separated `Upgrade` protocols forwarded (case-insensitive); any other upgrade
    /// (e.g. h2c) is stripped with `HTTP2-Settings` and the request forwarded as a plain
    /// request, and a backend 101 to a protocol not offered and allowed is answered 502.
    #[arg(long, env = "KEDA_HTTP_ALLOWED_UPGRADES", default_value = "websocket")]
    pub allowed_upgrades: String,

    /// Idle upstream HTTP/1.1 connections kept over all endpoints, plain and TLS together;
    /// beyond it the connection idle the longest is closed. 0: no bound.
    #[arg(long, env = "KEDA_HTTP_MAX_IDLE_CONNS", default_value_t = 1000)]
    pub max_idle_conns: usize,

    /// Idle upstream HTTP/1.1 connections kept per endpoint (0: none; unused ones are closed
    /// after 90 s).
    #[arg(long, env = "KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST", default_value_t = 200)]
    pub max_idle_conns_per_host: usize,

    /// Deprecated: when > 0, overrides KEDA_HTTP_READINESS_TIMEOUT.
    #[arg(long, env = "KEDA_CONDITION_WAIT_TIMEOUT", value_parser = duration)]
    pub condition_wait_timeout: Option<Duration>,

    /// Deprecated: when > 0, overrides KEDA_HTTP_RESPONSE_HEADER_TIMEOUT.
    #[arg(long, env = "KEDA_RESPONSE_HEADER_TIMEOUT", value_parser = duration)]
    pub legacy_response_header_timeout: Option<Duration>,

    /// Requests one replica may hold for cold starts, across routes; 0 means unlimited.
    #[arg(
        long,
        env = "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS",
        default_value_t = crate::coldstart::DEFAULT_MAX_PENDING
    )]
    pub cold_start_max_pending_requests: u32,

    /// Period of the routing-table rebuild from the Kubernetes watches' stores.
    #[arg(long, env = "KEDA_HTTP_ROUTING_TABLE_REFRESH_INTERVAL", default_value = "1m", value_parser = duration)]
    pub routing_table_refresh_interval: Duration,

    /// /readyz fails when the routing table was not refreshed for this long (at least twice the
    /// refresh interval); 0 disables.
    #[arg(long, env = "KEDA_HTTP_ROUTING_TABLE_MAX_STALENESS", default_value = "5m", value_parser = duration)]
    pub routing_table_max_staleness: Duration,

    /// Time a client may take to send the request header section, which is also how long an
    /// idle HTTP/1.1 client connection stays open between requests (our addition).
    #[arg(long, env = "KEDA_HTTP_READ_HEADER_TIMEOUT", default_value = "1m", value_parser = duration)]
    pub read_header_timeout: Duration,

    /// Largest request header section accepted, in bytes; larger gets 431 (our addition).
    #[arg(long, env = "KEDA_HTTP_MAX_HEADER_BYTES", default_value_t = 1 << 20)]
    pub max_header_bytes: usize,

    /// JSON file of InterceptorRoutes/HTTPScaledObjects to route by instead of watching
    /// Kubernetes (our addition; with it set, routes and endpoints come from files only).
    #[arg(long, env = "KEDA_HTTP_ROUTES_FILE")]
    pub routes_file: Option<PathBuf>,

    /// JSON file mapping "namespace/service/port" to ready endpoint addresses (our addition,
    /// for running without Kubernetes).
    #[arg(long, env = "KEDA_HTTP_ENDPOINTS_FILE")]
    pub endpoints_file: Option<PathBuf>,

    /// Serve Prometheus /metrics.
    #[arg(long, env = "OTEL_PROM_EXPORTER_ENABLED", default_value = "true", value_parser = go_bool, action = ArgAction::Set)]
    pub otel_prom_exporter_enabled: bool,

    /// Port of the Prometheus /metrics listener.
    #[arg(long, env = "OTEL_PROM_EXPORTER_PORT", default_value_t = 2223)]
    pub otel_prom_exporter_port: u16,

    /// Push the /metrics instruments over OTLP every OTEL_METRIC_EXPORT_INTERVAL (same names;
    /// http/protobuf unless OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=grpc).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_METRICS_ENABLED", default_value = "false", value_parser = go_bool, action = ArgAction::Set)]
    pub otel_exporter_otlp_metrics_enabled: bool,

    /// Trace every request (server, cold-start wait and upstream attempt spans; W3C
    /// traceparent in and out), sampled by OTEL_TRACES_SAMPLER.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENABLED", default_value = "false", value_parser = go_bool, action = ArgAction::Set)]
    pub otel_exporter_otlp_traces_enabled: bool,

    /// OTLP traces protocol: console, http/protobuf or grpc.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", default_value = "console", value_parser = traces_protocol)]
    pub otel_exporter_otlp_traces_protocol: String,

    /// The standard OpenTelemetry SDK variables (endpoints, headers, timeouts, sampler,
    /// resource, metric export interval).
    #[command(flatten)]
    pub otel: OtelArgs,

    /// The controller-runtime logging flags (`--zap-log-level`, `--zap-encoder`, ...).
    #[command(flatten)]
    pub zap: ZapFlags,
}

impl Config {
    /// Parses the process arguments and environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        keda_http_runtime::config::from_process::<Self>().and_then(Self::validated)
    }

    /// Parses `args` (the first is the program name) with `env` standing in for the process
    /// environment: every variable `env` knows becomes its flag, unless the flag is given.
    pub fn parse_from<I, T>(
        args: I,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        keda_http_runtime::config::parse_from::<Self, _, _>(args, env).and_then(Self::validated)
    }

    /// Cross-field checks clap cannot express.
    fn validated(self) -> Result<Self, ConfigError> {
        if let (Some(min), Some(max)) = (self.tls_min_version(), self.tls_max_version())
            && min == TlsVersion::Tls13
            && max == TlsVersion::Tls12
        {
            return Err(ConfigError::Invalid(
                "invalid KEDA_HTTP_TLS_MIN_VERSION/KEDA_HTTP_TLS_MAX_VERSION: minimum 1.3 is above maximum 1.2"
                    .into(),
            ));
        }
        if self.routing_table_refresh_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "invalid KEDA_HTTP_ROUTING_TABLE_REFRESH_INTERVAL (--routing-table-refresh-interval): must be above 0"
                    .into(),
            ));
        }
        if !self.routing_table_max_staleness.is_zero()
            && self.routing_table_max_staleness < 2 * self.routing_table_refresh_interval
        {
            return Err(ConfigError::Invalid(format!(
                "invalid KEDA_HTTP_ROUTING_TABLE_MAX_STALENESS (--routing-table-max-staleness): {:?} is below twice KEDA_HTTP_ROUTING_TABLE_REFRESH_INTERVAL ({:?}); use at least {:?} or 0 to disable",
                self.routing_table_max_staleness,
                self.routing_table_refresh_interval,
                2 * self.routing_table_refresh_interval
            )));
        }
        if self.max_header_bytes < 1024 {
            return Err(ConfigError::Invalid(format!(
                "invalid KEDA_HTTP_MAX_HEADER_BYTES (--max-header-bytes): {} is below 1024",
                self.max_header_bytes
            )));
        }
        Ok(self)
    }

    /// Settings that were given but have no effect here, one line each naming the variable and
    /// why; `main` logs each as a WARN line at start. (The `--zap-*` flags without effect are
    /// reported by the logging set-up; the OpenTelemetry settings by the tracing set-up.)
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.informer_resync_period.is_some() {
            warnings.push(
                "KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD has no effect: the Kubernetes \
                 watches stay current from watch events and relist when the watch expires; \
                 there is no periodic resync"
                    .to_owned(),
            );
        }
        if !self.profiling_bind_address.is_empty() {
            warnings.push(format!(
                "PROFILING_BIND_ADDRESS={} has no effect: there is no pprof endpoint (profile \
                 with perf or RUST_LOG=debug instead)",
                self.profiling_bind_address
            ));
        }
        warnings
    }

    /// The effective readiness timeout: the deprecated `KEDA_CONDITION_WAIT_TIMEOUT` wins when > 0.
    pub fn effective_readiness_timeout(&self) -> Duration {
        self.condition_wait_timeout
            .filter(|d| !d.is_zero())
            .unwrap_or(self.readiness_timeout)
    }

    /// The effective response-header timeout: the deprecated `KEDA_RESPONSE_HEADER_TIMEOUT` wins when > 0.
    pub fn effective_response_header_timeout(&self) -> Duration {
        self.legacy_response_header_timeout
            .filter(|d| !d.is_zero())
            .unwrap_or(self.response_header_timeout)
    }

    /// Skip upstream TLS verification (deprecated name first).
    pub fn tls_skip_verify(&self) -> bool {
        self.proxy_tls_skip_verify
            .or(self.tls_skip_verify)
            .unwrap_or(false)
    }

    /// Minimum TLS version (deprecated name first).
    pub fn tls_min_version(&self) -> Option<TlsVersion> {
        self.proxy_tls_min_version.or(self.tls_min_version)
    }

    /// Maximum TLS version (deprecated name first).
    pub fn tls_max_version(&self) -> Option<TlsVersion> {
        self.proxy_tls_max_version.or(self.tls_max_version)
    }

    /// A configuration for tests: every listener on `127.0.0.1:0`, short shutdown phases.
    pub fn for_tests() -> Self {
        let env = |_: &str| None;
        let mut config = Self::parse_from(
            [
                "keda-http-interceptor",
                "--proxy-port=0",
                "--admin-port=0",
                "--otel-prom-exporter-port=0",
                "--bind-address=127.0.0.1",
                "--shutdown-delay=0s",
                "--drain-timeout=10s",
            ],
            &env,
        )
        .unwrap_or_else(|_| unreachable!("the test arguments are valid"));
        config.proxy_tls_port = 0;
        config
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::CommandFactory as _;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::parse_from(["keda-http-interceptor"], &|k| map.get(k).cloned())
    }

    fn required() -> Vec<(&'static str, &'static str)> {
        vec![
            ("KEDA_HTTP_PROXY_PORT", "8080"),
            ("KEDA_HTTP_ADMIN_PORT", "9090"),
        ]
    }

    #[test]
    fn defaults_match_the_official_add_on() {
        let c = parse(&required()).expect("valid");
        assert_eq!(c.proxy_port, 8080);
        assert_eq!(c.admin_port, 9090);
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.shutdown_delay, Duration::from_secs(5));
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.response_header_timeout, Duration::from_secs(300));
        assert_eq!(c.request_timeout, Duration::ZERO);
        assert_eq!(c.max_idle_conns_per_host, 200);
        assert_eq!(c.max_idle_conns, 1000);
        assert_eq!(c.proxy_tls_port, 8443);
        assert!(!c.proxy_tls_enabled);
        assert!(c.enable_cold_start_header);
        assert!(c.otel_prom_exporter_enabled);
        assert_eq!(c.otel_prom_exporter_port, 2223);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn missing_port_names_the_variable() {
        let err = parse(&[("KEDA_HTTP_ADMIN_PORT", "9090")]).expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains("KEDA_HTTP_PROXY_PORT"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (var, value) in [
            ("KEDA_HTTP_PROXY_PORT", "eighty"),
            ("KEDA_HTTP_DRAIN_TIMEOUT", "30"),
            ("KEDA_HTTP_CONNECT_TIMEOUT", "-1s"),
            ("KEDA_HTTP_PROXY_TLS_ENABLED", "yes"),
            ("KEDA_HTTP_PROXY_TLS_MIN_VERSION", "1.1"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp"),
            ("KEDA_CONDITION_WAIT_TIMEOUT", "soon"),
        ] {
            let mut vars = required();
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let err = parse(&vars).expect_err(var);
            let msg = err.to_string();
            assert!(matches!(err, ConfigError::Invalid(_)), "{var}: {msg}");
            assert!(msg.contains(var), "{var}: {msg}");
            assert!(!msg.contains('\n'), "{var}: {msg}");
        }
    }

    #[test]
    fn go_syntax_durations_and_booleans() {
        let mut vars = required();
        vars.extend([
            ("KEDA_HTTP_REQUEST_TIMEOUT", "1m30s"),
            ("KEDA_HTTP_PROXY_TLS_ENABLED", "T"),
            ("KEDA_HTTP_ENABLE_COLD_START_HEADER", "0"),
        ]);
        let c = parse(&vars).expect("valid");
        assert_eq!(c.request_timeout, Duration::from_secs(90));
        assert!(c.proxy_tls_enabled);
        assert!(!c.enable_cold_start_header);
    }

    #[test]
    fn deprecated_timeouts_override_when_positive() {
        let mut vars = required();
        vars.extend([
            ("KEDA_HTTP_READINESS_TIMEOUT", "10s"),
            ("KEDA_CONDITION_WAIT_TIMEOUT", "20s"),
            ("KEDA_RESPONSE_HEADER_TIMEOUT", "0s"),
        ]);
        let c = parse(&vars).expect("valid");
        assert_eq!(c.effective_readiness_timeout(), Duration::from_secs(20));
        assert_eq!(
            c.effective_response_header_timeout(),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn deprecated_tls_names_take_precedence() {
        let mut vars = required();
        vars.extend([
            ("KEDA_HTTP_TLS_MIN_VERSION", "1.3"),
            ("KEDA_HTTP_PROXY_TLS_MIN_VERSION", "1.2"),
            ("KEDA_HTTP_TLS_SKIP_VERIFY", "true"),
        ]);
        let c = parse(&vars).expect("valid");
        assert_eq!(c.tls_min_version(), Some(TlsVersion::Tls12));
        assert!(c.tls_skip_verify());
    }

    #[test]
    fn staleness_must_be_at_least_twice_the_refresh_interval() {
        let with = |interval: &str, staleness: &str| {
            let mut vars = required();
            vars.extend([
                ("KEDA_HTTP_ROUTING_TABLE_REFRESH_INTERVAL", interval),
                ("KEDA_HTTP_ROUTING_TABLE_MAX_STALENESS", staleness),
            ]);
            parse(&vars)
        };
        let c = with("30s", "1m").expect("exactly twice");
        assert_eq!(c.routing_table_max_staleness, Duration::from_secs(60));
        assert!(with("1m", "0s").is_ok(), "0 disables the check");
        for (interval, staleness) in [("1m", "90s"), ("0s", "5m")] {
            let err = with(interval, staleness).expect_err(staleness);
            let msg = err.to_string();
            assert!(matches!(err, ConfigError::Invalid(_)), "{msg}");
            assert!(msg.contains("KEDA_HTTP_ROUTING_TABLE_"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn flags_win_over_variables() {
        let map: HashMap<String, String> = required()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let c = Config::parse_from(["x", "--proxy-port=1234"], &|k| map.get(k).cloned())
            .expect("valid");
        assert_eq!(c.proxy_port, 1234);
    }

    #[test]
    fn chart_zap_flags_are_accepted() {
        let map: HashMap<String, String> = required()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let c = Config::parse_from(
            [
                "x",
                "--zap-log-level=info",
                "--zap-encoder=json",
                "--zap-time-encoding=rfc3339",
            ],
            &|k| map.get(k).cloned(),
        )
        .expect("valid");
        assert_eq!(c.zap.zap_encoder, Some(LogFormat::Json));
    }

    #[test]
    fn numeric_zap_levels_are_more_verbose_than_info() {
        let map: HashMap<String, String> = required()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let c = Config::parse_from(["x", "--zap-log-level=1", "--zap-devel"], &|k| {
            map.get(k).cloned()
        })
        .expect("valid");
        let settings = c.zap.settings(LogFormat::Console);
        assert_eq!(settings.filter, "debug");
        assert!(matches!(
            Config::parse_from(["x", "--zap-log-level=0"], &|k| map.get(k).cloned()),
            Err(ConfigError::Invalid(msg)) if msg.contains("--zap-log-level")
        ));
    }

    /// Every official variable (compat §7.1, §13), each set alone to a non-default value:
    /// it either changes the parsed settings or produces the start-up warning naming it.
    #[test]
    fn every_official_variable_has_an_effect_or_a_warning() {
        let base = parse(&required()).expect("valid");
        assert!(base.warnings().is_empty(), "{:?}", base.warnings());
        let warned = [
            ("KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD", "30m"),
            ("PROFILING_BIND_ADDRESS", "127.0.0.1:6060"),
        ];
        let effective = [
            ("KEDA_HTTP_PROXY_PORT", "8081"),
            ("KEDA_HTTP_ADMIN_PORT", "9091"),
            ("KEDA_HTTP_WATCH_NAMESPACE", "apps"),
            ("KEDA_HTTP_PROXY_TLS_ENABLED", "true"),
            ("KEDA_HTTP_PROXY_TLS_CERT_PATH", "/other/tls.crt"),
            ("KEDA_HTTP_PROXY_TLS_KEY_PATH", "/other/tls.key"),
            ("KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS", "/certs/a,/certs/b"),
            ("KEDA_HTTP_PROXY_TLS_SKIP_VERIFY", "true"),
            ("KEDA_HTTP_PROXY_TLS_PORT", "9443"),
            ("KEDA_HTTP_PROXY_TLS_MIN_VERSION", "1.3"),
            ("KEDA_HTTP_PROXY_TLS_MAX_VERSION", "1.2"),
            (
                "KEDA_HTTP_PROXY_TLS_CIPHER_SUITES",
                "TLS_AES_128_GCM_SHA256",
            ),
            ("KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES", "X25519"),
            ("KEDA_HTTP_TLS_SKIP_VERIFY", "true"),
            ("KEDA_HTTP_TLS_MIN_VERSION", "1.3"),
            ("KEDA_HTTP_TLS_MAX_VERSION", "1.2"),
            ("KEDA_HTTP_TLS_CIPHER_SUITES", "TLS_AES_128_GCM_SHA256"),
            ("KEDA_HTTP_TLS_CURVE_PREFERENCES", "X25519"),
            ("KEDA_HTTP_TLS_CA_DIRS", "/ca"),
            ("KEDA_HTTP_ENABLE_COLD_START_HEADER", "false"),
            ("KEDA_HTTP_LOG_REQUESTS", "true"),
            ("KEDA_HTTP_DRAIN_TIMEOUT", "10s"),
            ("KEDA_HTTP_SHUTDOWN_DELAY", "1s"),
            ("KEDA_HTTP_DIRECT_POD_ROUTING", "false"),
            ("KEDA_HTTP_REQUEST_TIMEOUT", "20s"),
            ("KEDA_HTTP_RESPONSE_HEADER_TIMEOUT", "20s"),
            ("KEDA_HTTP_READINESS_TIMEOUT", "20s"),
            ("KEDA_HTTP_CONNECT_TIMEOUT", "1s"),
            ("KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST", "20"),
            ("KEDA_HTTP_MAX_IDLE_CONNS", "10"),
            ("KEDA_CONDITION_WAIT_TIMEOUT", "20s"),
            ("KEDA_RESPONSE_HEADER_TIMEOUT", "20s"),
            ("KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS", "5"),
            ("KEDA_HTTP_ROUTING_TABLE_REFRESH_INTERVAL", "2m"),
            ("KEDA_HTTP_ROUTING_TABLE_MAX_STALENESS", "10m"),
            ("OTEL_PROM_EXPORTER_ENABLED", "false"),
            ("OTEL_PROM_EXPORTER_PORT", "2224"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENABLED", "true"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENABLED", "true"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ];
        for (var, value) in warned {
            let mut vars = required();
            vars.push((var, value));
            let c = parse(&vars).expect(var);
            let warnings = c.warnings();
            assert_eq!(warnings.len(), 1, "{var}: {warnings:?}");
            assert!(warnings[0].starts_with(var), "{var}: {warnings:?}");
        }
        for (var, value) in effective {
            let mut vars = required();
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let c = parse(&vars).expect(var);
            assert_ne!(
                format!("{c:?}"),
                format!("{base:?}"),
                "{var} changed nothing"
            );
            assert!(c.warnings().is_empty(), "{var}: {:?}", c.warnings());
        }
    }

    #[test]
    fn help_documents_every_variable() {
        let help = Config::command().render_long_help().to_string();
        for var in [
            "KEDA_HTTP_PROXY_PORT",
            "KEDA_HTTP_ADMIN_PORT",
            "KEDA_HTTP_WATCH_NAMESPACE",
            "KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD",
            "KEDA_HTTP_PROXY_TLS_ENABLED",
            "KEDA_HTTP_PROXY_TLS_CERT_PATH",
            "KEDA_HTTP_PROXY_TLS_KEY_PATH",
            "KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS",
            "KEDA_HTTP_PROXY_TLS_SKIP_VERIFY",
            "KEDA_HTTP_PROXY_TLS_PORT",
            "KEDA_HTTP_PROXY_TLS_MIN_VERSION",
            "KEDA_HTTP_PROXY_TLS_MAX_VERSION",
            "KEDA_HTTP_PROXY_TLS_CIPHER_SUITES",
            "KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES",
            "PROFILING_BIND_ADDRESS",
            "KEDA_HTTP_ENABLE_COLD_START_HEADER",
            "KEDA_HTTP_LOG_REQUESTS",
            "KEDA_HTTP_DRAIN_TIMEOUT",
            "KEDA_HTTP_SHUTDOWN_DELAY",
            "KEDA_HTTP_DIRECT_POD_ROUTING",
            "KEDA_HTTP_REQUEST_TIMEOUT",
            "KEDA_HTTP_RESPONSE_HEADER_TIMEOUT",
            "KEDA_HTTP_READINESS_TIMEOUT",
            "KEDA_HTTP_CONNECT_TIMEOUT",
            "KEDA_HTTP_MAX_IDLE_CONNS",
            "KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST",
            "KEDA_CONDITION_WAIT_TIMEOUT",
            "KEDA_RESPONSE_HEADER_TIMEOUT",
            "OTEL_PROM_EXPORTER_ENABLED",
            "OTEL_PROM_EXPORTER_PORT",
            "OTEL_EXPORTER_OTLP_METRICS_ENABLED",
            "OTEL_EXPORTER_OTLP_TRACES_ENABLED",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "KEDA_HTTP_TLS_MIN_VERSION",
            "KEDA_HTTP_TLS_CA_DIRS",
            "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS",
            "KEDA_HTTP_RETRY_COUNT",
            "KEDA_HTTP_ALLOWED_UPGRADES",
        ] {
            assert!(
                help.contains(&format!("env: {var}=")) || help.contains(&format!("env: {var}]")),
                "{var} missing from --help"
            );
        }
    }
}
