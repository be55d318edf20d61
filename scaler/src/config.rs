//! Configuration: every setting is a flag and a `KEDA_HTTP_*` (or upstream-compatible)
//! environment variable, parsed once at start-up (compat §7.2).
//!
//! An invalid value is reported as one line naming the environment variable (and flag), and
//! the binary exits with status 64 before binding any port. [`Config::parse_from`] reads an
//! explicit variable lookup, so tests never touch the process environment; the parsing shape
//! and the `--zap-*` flags come from `keda_http_runtime`.

use std::time::Duration;

use clap::Parser;
use clap::builder::{BoolishValueParser, TypedValueParser as _};
use keda_http_runtime::logging::ZapFlags;

pub use keda_http_runtime::config::{ConfigError, EXIT_CONFIG};

use crate::discovery::AdminService;

/// Environment variable of the listen address (ours, shared with the interceptor).
pub const ENV_BIND_ADDRESS: &str = "KEDA_HTTP_BIND_ADDRESS";
/// Environment variable of the gRPC port.
pub const ENV_PORT: &str = "KEDA_HTTP_SCALER_PORT";
/// Environment variable of the interceptors' namespace.
pub const ENV_TARGET_ADMIN_NAMESPACE: &str = "KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE";
/// Environment variable of the interceptor admin Service.
pub const ENV_TARGET_ADMIN_SERVICE: &str = "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE";
/// Environment variable of the interceptor Deployment (accepted, unused, as upstream).
pub const ENV_TARGET_ADMIN_DEPLOYMENT: &str = "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT";
/// Environment variable of the interceptor admin port.
pub const ENV_TARGET_ADMIN_PORT: &str = "KEDA_HTTP_SCALER_TARGET_ADMIN_PORT";
/// Environment variable of the admin port's name in the EndpointSlices (ours).
pub const ENV_TARGET_ADMIN_PORT_NAME: &str = "KEDA_HTTP_SCALER_TARGET_ADMIN_PORT_NAME";
/// Environment variable of the informer resync period (accepted, unused: we watch).
pub const ENV_RESYNC_PERIOD: &str = "KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD";
/// Environment variable of the poll tick.
pub const ENV_QUEUE_TICK: &str = "KEDA_HTTP_QUEUE_TICK_DURATION";
/// Environment variable of the StreamIsActive interval in milliseconds.
pub const ENV_STREAM_INTERVAL_MS: &str = "KEDA_HTTP_SCALER_STREAM_INTERVAL_MS";
/// Environment variable of the per-pod fetch timeout (ours; upstream 0.16 uses the tick).
pub const ENV_FETCH_TIMEOUT: &str = "KEDA_HTTP_SCALER_FETCH_TIMEOUT";
/// Environment variable switching the `/queue/watch` push subscriptions (ours).
pub const ENV_PUSH: &str = "KEDA_HTTP_SCALER_PUSH";
/// Environment variable of the graceful-shutdown drain bound (ours).
pub const ENV_DRAIN_TIMEOUT: &str = "KEDA_HTTP_SCALER_DRAIN_TIMEOUT";
/// Environment variable enabling `/metrics`.
pub const ENV_PROM_ENABLED: &str = "OTEL_PROM_EXPORTER_ENABLED";
/// Environment variable of the `/metrics` port.
pub const ENV_PROM_PORT: &str = "OTEL_PROM_EXPORTER_PORT";
/// Environment variable enabling OTLP metrics export.
pub const ENV_OTLP_METRICS: &str = "OTEL_EXPORTER_OTLP_METRICS_ENABLED";
/// Environment variable enabling OTLP tracing.
pub const ENV_OTLP_TRACES: &str = "OTEL_EXPORTER_OTLP_TRACES_ENABLED";
/// Environment variable of the OTLP trace protocol (validated as upstream).
pub const ENV_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// Environment variable of the profiling address (accepted, unused).
pub const ENV_PROFILING: &str = "PROFILING_BIND_ADDRESS";
/// Environment variable of the log filter (ours; `--zap-log-level` is the upstream flag).
pub const ENV_LOG_LEVEL: &str = "KEDA_HTTP_LOG_LEVEL";
/// Environment variable of the log format (ours; `--zap-encoder` is the upstream flag).
pub const ENV_LOG_FORMAT: &str = "KEDA_HTTP_LOG_FORMAT";

/// The smallest fetch timeout derived from the tick (upstream 0.16 clamps at 250 ms).
pub const MIN_DERIVED_FETCH_TIMEOUT: Duration = Duration::from_millis(250);

/// The scaler's settings.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "keda-http-scaler",
    version,
    about = "KEDA external scaler for HTTP workloads: polls the interceptors' /queue, follows their \
             /queue/watch push streams and answers KEDA's externalscaler gRPC calls.",
    after_help = "Every flag can also be set through the environment variable shown with it. \
                  Durations use Go syntax (500ms, 10s, 1m). An invalid value exits with status 64.",
    mut_arg("zap_log_level", |a| a.env(ENV_LOG_LEVEL)),
    mut_arg("zap_encoder", |a| a
        .env(ENV_LOG_FORMAT)
        .help("Log encoder: json or console [default: console]")),
    mut_arg("zap_time_encoding", |a| a.hide_short_help(true)),
    mut_arg("zap_stacktrace_level", |a| a.hide_short_help(true)),
    mut_arg("zap_devel", |a| a.hide_short_help(true))
)]
pub struct Config {
    /// gRPC port for KEDA (externalscaler, grpc.health.v1 `liveness`/`readiness`, reflection).
    #[arg(long, env = ENV_PORT, default_value_t = 8080)]
    pub port: u16,

    /// Address the gRPC and metrics listeners bind; unset: every address (IPv6 and IPv4, like
    /// Go's `:port`).
    #[arg(long, env = ENV_BIND_ADDRESS)]
    pub bind_address: Option<std::net::IpAddr>,

    /// Namespace of the interceptors' admin Service.
    #[arg(long, env = ENV_TARGET_ADMIN_NAMESPACE)]
    pub target_admin_namespace: String,

    /// Name of the interceptors' admin Service; its EndpointSlices list the interceptor pods.
    #[arg(long, env = ENV_TARGET_ADMIN_SERVICE)]
    pub target_admin_service: String,

    /// Accepted for compatibility; no effect (the official scaler ignores it too): interceptor
    /// pods are found through the admin Service's EndpointSlices (a warning is logged when set).
    #[arg(long, env = ENV_TARGET_ADMIN_DEPLOYMENT)]
    pub target_admin_deployment: Option<String>,

    /// Admin port dialled on each interceptor pod, unless the EndpointSlice lists a port named
    /// like --target-admin-port-name.
    #[arg(long, env = ENV_TARGET_ADMIN_PORT)]
    pub target_admin_port: u16,

    /// Name of the admin port in the EndpointSlices; when a slice lists it, its number is used
    /// instead of --target-admin-port.
    #[arg(long, env = ENV_TARGET_ADMIN_PORT_NAME, default_value = "admin")]
    pub target_admin_port_name: String,

    /// Accepted for compatibility; no effect: the watches have no periodic resync (a warning is
    /// logged when set).
    #[arg(long, env = ENV_RESYNC_PERIOD, value_parser = go_duration)]
    pub config_map_informer_rsync_period: Option<Duration>,

    /// How often every interceptor's /queue is polled (and health is re-evaluated).
    #[arg(long, env = ENV_QUEUE_TICK, default_value = "500ms", value_parser = positive_go_duration)]
    pub queue_tick_duration: Duration,

    /// StreamIsActive sends a message at least this often, in milliseconds (and at once when
    /// the answer changes).
    #[arg(long, env = ENV_STREAM_INTERVAL_MS, default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stream_interval_ms: u64,

    /// Timeout of one /queue fetch; default: the tick, at least 250ms.
    #[arg(long, env = ENV_FETCH_TIMEOUT, value_parser = positive_go_duration)]
    pub fetch_timeout: Option<Duration>,

    /// Subscribe to each interceptor's /queue/watch push stream (true/false).
    #[arg(long, env = ENV_PUSH, default_value = "true", value_parser = BoolishValueParser::new(),
          action = clap::ArgAction::Set)]
    pub push: bool,

    /// On SIGTERM, how long open gRPC calls may take to finish after health goes NOT_SERVING.
    #[arg(long, env = ENV_DRAIN_TIMEOUT, default_value = "5s", value_parser = go_duration)]
    pub drain_timeout: Duration,

    /// Serve Prometheus /metrics (true/false).
    #[arg(long, env = ENV_PROM_ENABLED, default_value = "true",
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub prometheus_enabled: bool,

    /// Port of /metrics.
    #[arg(long, env = ENV_PROM_PORT, default_value_t = 2223)]
    pub prometheus_port: u16,

    /// Push the /metrics instruments over OTLP every OTEL_METRIC_EXPORT_INTERVAL (same names;
    /// http/protobuf unless OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=grpc).
    #[arg(long, env = ENV_OTLP_METRICS, default_value = "false",
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub otlp_metrics_enabled: bool,

    /// A server span per gRPC call (W3C traceparent from KEDA), sampled by OTEL_TRACES_SAMPLER.
    #[arg(long, env = ENV_OTLP_TRACES, default_value = "false",
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub otlp_traces_enabled: bool,

    /// OTLP trace protocol: console, http/protobuf or grpc (checked as upstream does).
    #[arg(long, env = ENV_OTLP_TRACES_PROTOCOL, default_value = "console",
          value_parser = clap::builder::PossibleValuesParser::new(["console", "http/protobuf", "grpc"])
              .map(|s| s.to_ascii_lowercase()),
          ignore_case = true)]
    pub otlp_traces_protocol: String,

    /// Accepted for compatibility; no effect: there is no pprof endpoint (a warning is logged
    /// when set).
    #[arg(long, env = ENV_PROFILING)]
    pub profiling_bind_address: Option<String>,

    /// The standard OpenTelemetry SDK variables (endpoints, headers, timeouts, sampler,
    /// resource, metric export interval).
    #[command(flatten)]
    pub otel: keda_http_runtime::otel::OtelArgs,

    /// The controller-runtime logging flags; `--zap-log-level` and `--zap-encoder` also read
    /// KEDA_HTTP_LOG_LEVEL and KEDA_HTTP_LOG_FORMAT.
    #[command(flatten)]
    pub zap: ZapFlags,
}

impl Config {
    /// The per-pod fetch timeout: the configured one, else the tick clamped to ≥ 250 ms.
    pub fn fetch_timeout(&self) -> Duration {
        self.fetch_timeout
            .unwrap_or_else(|| self.queue_tick_duration.max(MIN_DERIVED_FETCH_TIMEOUT))
    }

    /// The StreamIsActive interval.
    pub fn stream_interval(&self) -> Duration {
        Duration::from_millis(self.stream_interval_ms)
    }

    /// Settings that were given but have no effect here, one line each naming the variable and
    /// why; `main` logs each as a WARN line at start. (The `--zap-*` flags without effect are
    /// reported by the logging set-up; the OpenTelemetry settings by the tracing set-up.)
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.target_admin_deployment.is_some() {
            warnings.push(format!(
                "{ENV_TARGET_ADMIN_DEPLOYMENT} has no effect: interceptor pods are found through \
                 the EndpointSlices of {ENV_TARGET_ADMIN_SERVICE} (the official scaler ignores it too)"
            ));
        }
        if self.config_map_informer_rsync_period.is_some() {
            warnings.push(format!(
                "{ENV_RESYNC_PERIOD} has no effect: the Kubernetes watches stay current from \
                 watch events and relist when the watch expires; there is no periodic resync"
            ));
        }
        if let Some(addr) = self
            .profiling_bind_address
            .as_deref()
            .filter(|a| !a.is_empty())
        {
            warnings.push(format!(
                "{ENV_PROFILING}={addr} has no effect: there is no pprof endpoint (profile with \
                 perf or RUST_LOG=debug instead)"
            ));
        }
        warnings
    }

    /// Where the interceptors' admin endpoints are.
    pub fn admin_service(&self) -> AdminService {
        AdminService {
            namespace: self.target_admin_namespace.clone(),
            service: self.target_admin_service.clone(),
            port_name: self.target_admin_port_name.clone(),
            port: self.target_admin_port,
        }
    }
}

impl Config {
    /// Parses the process arguments and environment.
    pub fn from_process() -> Result<Self, ConfigError> {
        keda_http_runtime::config::from_process()
    }

    /// Parses `args` (the first item is the program name) with `env` standing in for the
    /// process environment.
    pub fn parse_from<I, T>(
        args: I,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        keda_http_runtime::config::parse_from(args, env)
    }
}

fn go_duration(s: &str) -> Result<Duration, String> {
    keda_http_api::parse_go_duration(s).map_err(|e| e.to_string())
}

fn positive_go_duration(s: &str) -> Result<Duration, String> {
    let d = go_duration(s)?;
    if d.is_zero() {
        Err("must be greater than zero".to_owned())
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use keda_http_runtime::logging::LogFormat;

    use super::*;

    const REQUIRED: [&str; 7] = [
        "keda-http-scaler",
        "--target-admin-namespace",
        "keda",
        "--target-admin-service",
        "keda-add-ons-http-interceptor-admin",
        "--target-admin-port",
        "9090",
    ];

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        Config::parse_from(REQUIRED.iter().chain(extra), &|_| None)
    }

    fn parse_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::parse_from(["keda-http-scaler"], &|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_upstream() {
        let c = parse(&[]).expect("valid");
        assert_eq!(c.port, 8080);
        assert_eq!(c.queue_tick_duration, Duration::from_millis(500));
        assert_eq!(c.stream_interval(), Duration::from_millis(200));
        assert_eq!(c.fetch_timeout(), Duration::from_millis(500));
        assert_eq!(c.prometheus_port, 2223);
        assert!(c.push);
        assert_eq!(c.admin_service().port_name, "admin");
    }

    #[test]
    fn fetch_timeout_derives_from_tick_with_a_floor() {
        let c = parse(&["--queue-tick-duration", "100ms"]).expect("valid");
        assert_eq!(c.fetch_timeout(), MIN_DERIVED_FETCH_TIMEOUT);
        let c = parse(&["--fetch-timeout", "2s", "--push", "false"]).expect("valid");
        assert_eq!(c.fetch_timeout(), Duration::from_secs(2));
        assert!(!c.push);
    }

    #[test]
    fn invalid_values_name_the_variable_on_one_line() {
        let Err(ConfigError::Invalid(msg)) = parse(&["--queue-tick-duration", "fast"]) else {
            panic!("expected an error");
        };
        assert!(msg.contains("KEDA_HTTP_QUEUE_TICK_DURATION"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let Err(ConfigError::Invalid(msg)) = parse(&["--stream-interval-ms", "0"]) else {
            panic!("expected an error");
        };
        assert!(msg.contains("KEDA_HTTP_SCALER_STREAM_INTERVAL_MS"), "{msg}");
        let Err(ConfigError::Invalid(msg)) =
            Config::parse_from(["keda-http-scaler", "--target-admin-port", "9090"], &|_| {
                None
            })
        else {
            panic!("expected an error");
        };
        assert!(
            msg.contains("KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE"),
            "{msg}"
        );
    }

    #[test]
    fn accepts_upstream_chart_flags() {
        let c = parse(&[
            "--zap-log-level=debug",
            "--zap-encoder=json",
            "--zap-time-encoding=rfc3339",
            "--zap-stacktrace-level=error",
            "--zap-devel",
            "--otlp-traces-protocol=HTTP/protobuf",
        ])
        .expect("valid");
        assert_eq!(c.otlp_traces_protocol, "http/protobuf");
        assert!(matches!(
            parse(&["--otlp-traces-protocol=carrier-pigeon"]),
            Err(ConfigError::Invalid(msg)) if msg.contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        ));
        assert_eq!(c.zap.zap_encoder, Some(LogFormat::Json));
        assert_eq!(c.zap.zap_devel, Some(true));
        assert_eq!(c.zap.settings(LogFormat::Console).filter, "debug");
    }

    /// Every official variable (compat §7.2), each set alone to a non-default value: it either
    /// changes the parsed settings or produces the start-up warning naming it.
    #[test]
    fn every_official_variable_has_an_effect_or_a_warning() {
        let required = [
            (ENV_TARGET_ADMIN_NAMESPACE, "keda"),
            (
                ENV_TARGET_ADMIN_SERVICE,
                "keda-add-ons-http-interceptor-admin",
            ),
            (ENV_TARGET_ADMIN_PORT, "9090"),
        ];
        let with = |var: &'static str, value: &'static str| {
            let mut vars: Vec<(&str, &str)> = required
                .iter()
                .copied()
                .filter(|(k, _)| *k != var)
                .collect();
            vars.push((var, value));
            parse_env(&vars).expect(var)
        };
        let base = parse_env(&required).expect("valid");
        assert!(base.warnings().is_empty(), "{:?}", base.warnings());
        for (var, value) in [
            (ENV_TARGET_ADMIN_DEPLOYMENT, "keda-add-ons-http-interceptor"),
            (ENV_RESYNC_PERIOD, "30m"),
            (ENV_PROFILING, "127.0.0.1:6060"),
        ] {
            let warnings = with(var, value).warnings();
            assert_eq!(warnings.len(), 1, "{var}: {warnings:?}");
            assert!(warnings[0].starts_with(var), "{var}: {warnings:?}");
        }
        for (var, value) in [
            (ENV_PORT, "9090"),
            (ENV_TARGET_ADMIN_NAMESPACE, "other"),
            (ENV_TARGET_ADMIN_SERVICE, "other-admin"),
            (ENV_TARGET_ADMIN_PORT, "9091"),
            (ENV_QUEUE_TICK, "1s"),
            (ENV_STREAM_INTERVAL_MS, "100"),
            (ENV_PROM_ENABLED, "false"),
            (ENV_PROM_PORT, "2224"),
            (ENV_OTLP_METRICS, "true"),
            (ENV_OTLP_TRACES, "true"),
            (ENV_OTLP_TRACES_PROTOCOL, "grpc"),
        ] {
            let c = with(var, value);
            assert_ne!(
                format!("{c:?}"),
                format!("{base:?}"),
                "{var} changed nothing"
            );
            assert!(c.warnings().is_empty(), "{var}: {:?}", c.warnings());
        }
    }

    #[test]
    fn settings_come_from_the_given_variables() {
        let c = parse_env(&[
            (ENV_TARGET_ADMIN_NAMESPACE, "keda"),
            (ENV_TARGET_ADMIN_SERVICE, "admin"),
            (ENV_TARGET_ADMIN_PORT, "9090"),
            (ENV_QUEUE_TICK, "1s"),
            (ENV_LOG_LEVEL, "2"),
            (ENV_LOG_FORMAT, "json"),
        ])
        .expect("valid");
        assert_eq!(c.target_admin_namespace, "keda");
        assert_eq!(c.queue_tick_duration, Duration::from_secs(1));
        let log = c.zap.settings(LogFormat::Console);
        // zap level -2: more verbose than debug, never error.
        assert_eq!(log.filter, "trace");
        assert_eq!(log.format, LogFormat::Json);
        let Err(ConfigError::Invalid(msg)) = parse_env(&[(ENV_TARGET_ADMIN_PORT, "x")]) else {
            panic!("expected an error");
        };
        assert!(msg.contains(ENV_TARGET_ADMIN_PORT), "{msg}");
    }
}
