//! Operator settings: command-line flags (controller-runtime names) and `KEDA_HTTP_OPERATOR_*`
//! environment variables (compat §7.3), parsed once at start-up.
//!
//! Flags are parsed by clap ([`Args`]); the environment is read through a lookup function so
//! that [`Config::from_args_and_env`] can be tested with a map. Deprecated `KEDAHTTP_*`
//! aliases are used only when the new name is unset, and each use produces a warning that the
//! caller logs once the logger is up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};
use keda_http_api::parse_go_duration;
use keda_http_runtime::logging::ZapFlags;

pub use keda_http_runtime::logging::LogFormat;

/// Scaler Service name written into `scalerAddress` (required).
pub const ENV_EXTERNAL_SCALER_SERVICE: &str = "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE";
/// Scaler gRPC port written into `scalerAddress` (default 8091).
pub const ENV_EXTERNAL_SCALER_PORT: &str = "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT";
/// Deprecated alias of [`ENV_EXTERNAL_SCALER_SERVICE`].
pub const ENV_LEGACY_EXTERNAL_SCALER_SERVICE: &str = "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE";
/// Deprecated alias of [`ENV_EXTERNAL_SCALER_PORT`].
pub const ENV_LEGACY_EXTERNAL_SCALER_PORT: &str = "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_PORT";
/// Namespace of the scaler Service (and of the leader-election Lease).
pub const ENV_NAMESPACE: &str = "KEDA_HTTP_OPERATOR_NAMESPACE";
/// Restricts every watch to one namespace; empty means all namespaces.
pub const ENV_WATCH_NAMESPACE: &str = "KEDA_HTTP_OPERATOR_WATCH_NAMESPACE";
/// How long a Lease is valid without renewal (default 15s).
pub const ENV_LEASE_DURATION: &str = "KEDA_HTTP_OPERATOR_LEADER_ELECTION_LEASE_DURATION";
/// How long the leader keeps retrying a renewal before giving up (default 10s).
pub const ENV_RENEW_DEADLINE: &str = "KEDA_HTTP_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE";
/// Interval between acquire/renew attempts (default 2s).
pub const ENV_RETRY_PERIOD: &str = "KEDA_HTTP_OPERATOR_LEADER_ELECTION_RETRY_PERIOD";

/// The scaler gRPC port used when none is configured.
pub const DEFAULT_EXTERNAL_SCALER_PORT: u16 = 8091;
/// The Lease name (controller-runtime `LeaderElectionID`).
pub const LEASE_NAME: &str = "http-add-on.keda.sh";

const ENV_HELP: &str = "\
Environment variables:
  KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE  Scaler Service name in scalerAddress (required)
  KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT     Scaler gRPC port in scalerAddress [default: 8091]
  KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE   Deprecated alias, used only if the new name is unset
  KEDAHTTP_OPERATOR_EXTERNAL_SCALER_PORT      Deprecated alias, used only if the new name is unset
  KEDA_HTTP_OPERATOR_NAMESPACE                Namespace in scalerAddress and of the leader Lease
                                              [default: empty; the Lease then goes to the
                                              kubeconfig/in-cluster namespace]
  KEDA_HTTP_OPERATOR_WATCH_NAMESPACE          Watch only this namespace [default: all]
  KEDA_HTTP_OPERATOR_LEADER_ELECTION_LEASE_DURATION  Lease validity, Go duration [default: 15s]
  KEDA_HTTP_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE  Give up renewing after this [default: 10s]
  KEDA_HTTP_OPERATOR_LEADER_ELECTION_RETRY_PERIOD    Acquire/renew interval [default: 2s]
  POD_NAME, HOSTNAME                          Prefix of this replica's Lease identity
                                              (<name>_<random uuid>)
  RUST_LOG                                    tracing filter; overrides --zap-log-level
  KUBECONFIG                                  kubeconfig file when not running in a cluster

Invalid settings exit with status 64 and one line naming the variable or flag.";

/// Command-line flags, named as the official (controller-runtime) operator names them. Boolean
/// flags take Go's forms: `--flag`, `--flag=true`, `--flag=false`.
#[derive(Parser, Debug, Clone)]
#[command(name = "keda-http-operator", version, about = ABOUT, after_help = ENV_HELP,
          mut_arg("zap_encoder", |a| a.help(
              "Log encoder: json or console [default: json; console with --zap-devel]")))]
pub struct Args {
    /// Address of the Prometheus /metrics endpoint (Go syntax, ":8080" = all interfaces); "0"
    /// disables it.
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: String,
    /// Address of /healthz and /readyz; "0" disables them.
    #[arg(long, default_value = ":8081")]
    pub health_probe_bind_address: String,
    /// Run only while holding the Lease "http-add-on.keda.sh" (one active replica).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true")]
    pub leader_elect: bool,
    /// Serve /metrics over HTTPS (certificate from --metrics-cert-dir, else self-signed).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true")]
    pub metrics_secure: bool,
    /// Require a bearer token that the API server authenticates (TokenReview) and authorises
    /// for GET /metrics (SubjectAccessReview).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true")]
    pub metrics_auth: bool,
    /// Directory holding tls.crt and tls.key for --metrics-secure; unset means a self-signed
    /// certificate generated at start-up.
    #[arg(long)]
    pub metrics_cert_dir: Option<PathBuf>,
    /// Accepted for compatibility; no effect (there is no pprof endpoint).
    #[arg(long, default_value = "")]
    pub profiling_bind_address: String,
    /// The controller-runtime logging flags (`--zap-log-level`, `--zap-encoder`, ...).
    #[command(flatten)]
    pub zap: ZapFlags,
}

const ABOUT: &str = "keda-http operator: turns HTTPScaledObjects into KEDA ScaledObjects and \
reports Ready conditions on HTTPScaledObjects and InterceptorRoutes.";

/// Leader-election timings (controller-runtime defaults 15s / 10s / 2s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderTimings {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader retries renewing before it gives up leadership.
    pub renew_deadline: Duration,
    /// Interval between acquire and renew attempts.
    pub retry_period: Duration,
}

impl Default for LeaderTimings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Logging settings derived from the `--zap-*` flags (JSON unless `--zap-devel`).
pub use keda_http_runtime::logging::LogSettings as LogConfig;

/// Everything the operator needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Scaler Service name (`<service>.<namespace>:<port>` is the `scalerAddress`).
    pub external_scaler_service: String,
    /// Scaler gRPC port.
    pub external_scaler_port: u16,
    /// The operator's namespace: written into `scalerAddress`, holds the Lease.
    pub namespace: String,
    /// Restricts watches to one namespace; `None` watches all.
    pub watch_namespace: Option<String>,
    /// Run only while holding the Lease.
    pub leader_elect: bool,
    /// Leader-election timings.
    pub leader_timings: LeaderTimings,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// `/metrics` listener; `None` disables it.
    pub metrics_addr: Option<SocketAddr>,
    /// Serve `/metrics` over TLS.
    pub metrics_secure: bool,
    /// Require an authorised bearer token for `/metrics`.
    pub metrics_auth: bool,
    /// `tls.crt` + `tls.key` for the metrics listener; `None` means self-signed.
    pub metrics_cert_dir: Option<PathBuf>,
    /// `/healthz` + `/readyz` listener; `None` disables them.
    pub probe_addr: Option<SocketAddr>,
    /// Logging.
    pub log: LogConfig,
}

impl Config {
    /// A configuration with defaults and the given scaler Service; for tests and embedding.
    /// Probes and metrics are disabled, the identity is random.
    pub fn new(external_scaler_service: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            external_scaler_service: external_scaler_service.into(),
            external_scaler_port: DEFAULT_EXTERNAL_SCALER_PORT,
            namespace: namespace.into(),
            watch_namespace: None,
            leader_elect: false,
            leader_timings: LeaderTimings::default(),
            identity: default_identity(None),
            metrics_addr: None,
            metrics_secure: false,
            metrics_auth: false,
            metrics_cert_dir: None,
            probe_addr: None,
            log: ZapFlags::default().settings(LogFormat::Json),
        }
    }

    /// The `scalerAddress` trigger metadata value: `<service>.<namespace>:<port>`.
    pub fn scaler_address(&self) -> String {
        format!(
            "{}.{}:{}",
            self.external_scaler_service, self.namespace, self.external_scaler_port
        )
    }

    /// Validates flags and environment. Returns the config and the warnings to log (deprecated
    /// aliases, no-op flags).
    pub fn from_args_and_env(
        args: &Args,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        // Empty values count as unset, as Go's envconfig and os.Getenv checks treat them.
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mut with_alias = |new: &'static str, old: &'static str| match get(new) {
            Some(v) => Some(v),
            None => get(old).inspect(|_| {
                warnings.push(format!("{old} is deprecated; use {new} instead"));
            }),
        };
        let service = with_alias(
            ENV_EXTERNAL_SCALER_SERVICE,
            ENV_LEGACY_EXTERNAL_SCALER_SERVICE,
        )
        .ok_or(ConfigError::Missing(ENV_EXTERNAL_SCALER_SERVICE))?;
        let port = match with_alias(ENV_EXTERNAL_SCALER_PORT, ENV_LEGACY_EXTERNAL_SCALER_PORT) {
            None => DEFAULT_EXTERNAL_SCALER_PORT,
            Some(v) => v
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ConfigError::Invalid {
                    name: ENV_EXTERNAL_SCALER_PORT,
                    value: v.clone(),
                    reason: "expected a port number 1-65535".to_owned(),
                })?,
        };
        let namespace = get(ENV_NAMESPACE).unwrap_or_default();
        if namespace.is_empty() {
            warnings.push(format!(
                "{ENV_NAMESPACE} is not set: scalerAddress will be \"{service}.:{port}\", which \
                 KEDA cannot resolve; set it to the namespace of the scaler Service"
            ));
        }
        let watch_namespace = get(ENV_WATCH_NAMESPACE);
        let duration = |name: &'static str, default: Duration| match get(name) {
            None => Ok(default),
            Some(v) => match parse_go_duration(&v) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(ConfigError::Invalid {
                    name,
                    value: v,
                    reason: "must be greater than zero".to_owned(),
                }),
                Err(e) => Err(ConfigError::Invalid {
                    name,
                    value: v,
                    reason: e.to_string(),
                }),
            },
        };
        let defaults = LeaderTimings::default();
        let leader_timings = LeaderTimings {
            lease_duration: duration(ENV_LEASE_DURATION, defaults.lease_duration)?,
            renew_deadline: duration(ENV_RENEW_DEADLINE, defaults.renew_deadline)?,
            retry_period: duration(ENV_RETRY_PERIOD, defaults.retry_period)?,
        };
        validate_timings(&leader_timings)?;
        let metrics_addr =
            parse_bind_address("--metrics-bind-address", &args.metrics_bind_address)?;
        let probe_addr = parse_bind_address(
            "--health-probe-bind-address",
            &args.health_probe_bind_address,
        )?;
        let log = args.zap.settings(LogFormat::Json);
        if args.metrics_cert_dir.is_some() && !args.metrics_secure {
            warnings.push("--metrics-cert-dir has no effect without --metrics-secure".to_owned());
        }
        if !args.profiling_bind_address.is_empty() {
            warnings.push(format!(
                "--profiling-bind-address={} has no effect: there is no pprof endpoint (profile \
                 with perf or RUST_LOG=debug instead)",
                args.profiling_bind_address
            ));
        }
        let config = Self {
            external_scaler_service: service,
            external_scaler_port: port,
            namespace,
            watch_namespace,
            leader_elect: args.leader_elect,
            leader_timings,
            identity: default_identity(get("POD_NAME").or_else(|| get("HOSTNAME")).as_deref()),
            metrics_addr,
            metrics_secure: args.metrics_secure,
            metrics_auth: args.metrics_auth,
            metrics_cert_dir: args.metrics_cert_dir.clone(),
            probe_addr,
            log,
        };
        Ok((config, warnings))
    }
}

/// Why the configuration was rejected; the message names the variable or flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset.
    #[error("{0} must be set")]
    Missing(&'static str),
    /// A value could not be used.
    #[error("{name}={value:?}: {reason}")]
    Invalid {
        /// The variable or flag.
        name: &'static str,
        /// What it was set to.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// client-go's rules: lease duration > renew deadline > 1.2 × retry period.
fn validate_timings(t: &LeaderTimings) -> Result<(), ConfigError> {
    if t.lease_duration <= t.renew_deadline {
        return Err(ConfigError::Invalid {
            name: ENV_LEASE_DURATION,
            value: keda_http_api::duration::format_go_duration(t.lease_duration),
            reason: format!(
                "must be greater than {ENV_RENEW_DEADLINE} ({})",
                keda_http_api::duration::format_go_duration(t.renew_deadline)
            ),
        });
    }
    if t.renew_deadline.as_secs_f64() <= 1.2 * t.retry_period.as_secs_f64() {
        return Err(ConfigError::Invalid {
            name: ENV_RENEW_DEADLINE,
            value: keda_http_api::duration::format_go_duration(t.renew_deadline),
            reason: format!(
                "must be greater than 1.2 x {ENV_RETRY_PERIOD} ({})",
                keda_http_api::duration::format_go_duration(t.retry_period)
            ),
        });
    }
    Ok(())
}

/// Parses a Go-style listen address: `:8080` (all interfaces), `127.0.0.1:8080`,
/// `localhost:8080`, `[::1]:8080`; `0` or empty disables the listener.
pub fn parse_bind_address(
    flag: &'static str,
    value: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    let v = value.trim();
    if v.is_empty() || v == "0" {
        return Ok(None);
    }
    let invalid = || ConfigError::Invalid {
        name: flag,
        value: value.to_owned(),
        reason: "expected [host]:port with an IP address or localhost, or 0 to disable".to_owned(),
    };
    let (host, port) = v.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let ip = match host {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| invalid())?,
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

/// `<pod name or hostname>_<random uuid>`, as controller-runtime builds its Lease identity.
fn default_identity(host: Option<&str>) -> String {
    let id = uuid::Uuid::new_v4();
    match host {
        Some(h) => format!("{h}_{id}"),
        None => format!("keda-http-operator_{id}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse_raw(
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let args =
            Args::try_parse_from(std::iter::once("keda-http-operator").chain(argv.iter().copied()))
                .expect("flags parse");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_args_and_env(&args, &|k| env.get(k).cloned())
    }

    /// Like [`parse_raw`] with the namespace set, as every real deployment has it.
    fn parse(argv: &[&str], env: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == ENV_NAMESPACE) {
            env.push((ENV_NAMESPACE, "keda"));
        }
        parse_raw(argv, &env)
    }

    #[test]
    fn defaults_match_the_official_operator() {
        let (c, warnings) = parse_raw(&[], &[(ENV_EXTERNAL_SCALER_SERVICE, "scaler")]).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("KEDA_HTTP_OPERATOR_NAMESPACE is not set"));
        assert_eq!(c.external_scaler_port, 8091);
        assert_eq!(c.scaler_address(), "scaler.:8091");
        assert_eq!(c.leader_timings, LeaderTimings::default());
        assert!(!c.leader_elect);
        assert_eq!(c.metrics_addr, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(c.probe_addr, Some("0.0.0.0:8081".parse().unwrap()));
        assert_eq!(c.watch_namespace, None);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn scaler_address_uses_service_namespace_and_port() {
        let (c, _) = parse(
            &[],
            &[
                (
                    ENV_EXTERNAL_SCALER_SERVICE,
                    "keda-add-ons-http-external-scaler",
                ),
                (ENV_EXTERNAL_SCALER_PORT, "9090"),
                (ENV_NAMESPACE, "keda"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.scaler_address(),
            "keda-add-ons-http-external-scaler.keda:9090"
        );
    }

    #[test]
    fn missing_scaler_service_names_the_variable() {
        let err = parse(&[], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE must be set"
        );
    }

    #[test]
    fn deprecated_aliases_apply_only_when_new_names_are_unset() {
        let (c, warnings) = parse(
            &[],
            &[
                (ENV_LEGACY_EXTERNAL_SCALER_SERVICE, "old"),
                (ENV_LEGACY_EXTERNAL_SCALER_PORT, "1234"),
            ],
        )
        .unwrap();
        assert_eq!(
            (c.external_scaler_service.as_str(), c.external_scaler_port),
            ("old", 1234)
        );
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE is deprecated"));

        let (c, warnings) = parse(
            &[],
            &[
                (ENV_EXTERNAL_SCALER_SERVICE, "new"),
                (ENV_LEGACY_EXTERNAL_SCALER_SERVICE, "old"),
                (ENV_EXTERNAL_SCALER_PORT, "9090"),
                (ENV_LEGACY_EXTERNAL_SCALER_PORT, "1234"),
            ],
        )
        .unwrap();
        assert_eq!(
            (c.external_scaler_service.as_str(), c.external_scaler_port),
            ("new", 9090)
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let base = (ENV_EXTERNAL_SCALER_SERVICE, "s");
        let err = parse(&[], &[base, (ENV_EXTERNAL_SCALER_PORT, "http")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT="),
            "{err}"
        );
        let err = parse(&[], &[base, (ENV_LEGACY_EXTERNAL_SCALER_PORT, "0")]).unwrap_err();
        assert!(err.to_string().contains("EXTERNAL_SCALER_PORT"), "{err}");
        let err = parse(&[], &[base, (ENV_RETRY_PERIOD, "soon")]).unwrap_err();
        assert!(err.to_string().starts_with(ENV_RETRY_PERIOD), "{err}");
        let err = parse(&["--metrics-bind-address=nowhere"], &[base]).unwrap_err();
        assert!(
            err.to_string().starts_with("--metrics-bind-address"),
            "{err}"
        );
        let err = Args::try_parse_from(["keda-http-operator", "--zap-encoder=xml"]).unwrap_err();
        assert!(err.to_string().contains("--zap-encoder"), "{err}");
    }

    #[test]
    fn leader_timings_are_parsed_and_checked_like_client_go() {
        let base = (ENV_EXTERNAL_SCALER_SERVICE, "s");
        let (c, _) = parse(
            &[],
            &[
                base,
                (ENV_LEASE_DURATION, "2s"),
                (ENV_RENEW_DEADLINE, "1500ms"),
                (ENV_RETRY_PERIOD, "200ms"),
            ],
        )
        .unwrap();
        assert_eq!(c.leader_timings.lease_duration, Duration::from_secs(2));
        assert_eq!(c.leader_timings.renew_deadline, Duration::from_millis(1500));
        assert_eq!(c.leader_timings.retry_period, Duration::from_millis(200));

        let err = parse(&[], &[base, (ENV_LEASE_DURATION, "5s")]).unwrap_err();
        assert!(err.to_string().starts_with(ENV_LEASE_DURATION), "{err}");
        let err = parse(&[], &[base, (ENV_RETRY_PERIOD, "9s")]).unwrap_err();
        assert!(err.to_string().starts_with(ENV_RENEW_DEADLINE), "{err}");
        let err = parse(&[], &[base, (ENV_RETRY_PERIOD, "0s")]).unwrap_err();
        assert!(err.to_string().starts_with(ENV_RETRY_PERIOD), "{err}");
    }

    #[test]
    fn go_style_flags_are_accepted() {
        let base = (ENV_EXTERNAL_SCALER_SERVICE, "s");
        let (c, warnings) = parse(
            &[
                "--leader-elect",
                "--metrics-bind-address=127.0.0.1:0",
                "--health-probe-bind-address=0",
                "--metrics-secure=false",
                "--zap-log-level=debug",
                "--zap-encoder=console",
                "--zap-time-encoding=rfc3339",
                "--zap-stacktrace-level=error",
            ],
            &[base],
        )
        .unwrap();
        assert!(c.leader_elect);
        assert_eq!(c.metrics_addr, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.probe_addr, None);
        assert_eq!(c.log.format, LogFormat::Console);
        assert_eq!(c.log.filter, "debug");
        // The two flags without effect are named once each when logging starts.
        assert_eq!(c.log.ignored.len(), 2);
        assert!(warnings.is_empty());

        let (c, warnings) = parse(
            &[
                "--leader-elect=false",
                "--metrics-secure",
                "--metrics-auth=true",
                "--metrics-cert-dir=/certs",
            ],
            &[base],
        )
        .unwrap();
        assert!(!c.leader_elect);
        assert!(c.metrics_secure && c.metrics_auth);
        assert_eq!(c.metrics_cert_dir, Some(PathBuf::from("/certs")));
        assert!(warnings.is_empty(), "{warnings:?}");

        let (_, warnings) = parse(
            &[
                "--metrics-cert-dir=/certs",
                "--profiling-bind-address=:6060",
            ],
            &[base],
        )
        .unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn bind_addresses_follow_go_syntax() {
        let f = "--flag";
        assert_eq!(
            parse_bind_address(f, ":9").unwrap(),
            Some("0.0.0.0:9".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address(f, "localhost:9").unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address(f, "[::1]:9").unwrap(),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(parse_bind_address(f, "0").unwrap(), None);
        assert_eq!(parse_bind_address(f, "").unwrap(), None);
        assert!(parse_bind_address(f, "8080").is_err());
        assert!(parse_bind_address(f, "host.example:80").is_err());
    }

    /// Every official variable and flag (compat §7.3), each set alone to a non-default value:
    /// it either changes the parsed settings or produces the start-up warning naming it.
    #[test]
    fn every_official_setting_has_an_effect_or_a_warning() {
        let required = [(ENV_EXTERNAL_SCALER_SERVICE, "scaler")];
        let parsed = |argv: &[&str], env: &[(&str, &str)]| {
            let mut vars: Vec<(&str, &str)> = required
                .iter()
                .copied()
                .filter(|(k, _)| env.iter().all(|(e, _)| e != k))
                .collect();
            vars.extend_from_slice(env);
            let (mut c, warnings) = parse(argv, &vars).expect("valid");
            // The identity is random per start; it is not a setting.
            c.identity.clear();
            (format!("{c:?}"), warnings)
        };
        let (base, base_warnings) = parsed(&[], &[]);
        assert!(base_warnings.is_empty(), "{base_warnings:?}");
        let (_, warnings) = parsed(&["--profiling-bind-address=127.0.0.1:6060"], &[]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("--profiling-bind-address"),
            "{warnings:?}"
        );
        for (name, argv, env) in [
            (
                "service",
                &[][..],
                &[(ENV_EXTERNAL_SCALER_SERVICE, "other")][..],
            ),
            ("port", &[], &[(ENV_EXTERNAL_SCALER_PORT, "9090")]),
            ("namespace", &[], &[(ENV_NAMESPACE, "other")]),
            ("watch", &[], &[(ENV_WATCH_NAMESPACE, "apps")]),
            ("lease", &[], &[(ENV_LEASE_DURATION, "30s")]),
            ("renew", &[], &[(ENV_RENEW_DEADLINE, "5s")]),
            ("retry", &[], &[(ENV_RETRY_PERIOD, "1s")]),
            ("metrics", &["--metrics-bind-address=:9000"], &[]),
            ("secure", &["--metrics-secure"], &[]),
            ("auth", &["--metrics-auth"], &[]),
            ("probes", &["--health-probe-bind-address=:9001"], &[]),
            ("leader", &["--leader-elect"], &[]),
            (
                "cert dir",
                &["--metrics-secure", "--metrics-cert-dir=/certs"],
                &[],
            ),
        ] {
            let (c, warnings) = parsed(argv, env);
            assert_ne!(c, base, "{name} changed nothing");
            assert!(warnings.is_empty(), "{name}: {warnings:?}");
        }
        // The deprecated aliases apply, with their deprecation warning.
        let alias = ENV_LEGACY_EXTERNAL_SCALER_PORT;
        let (c, warnings) = parsed(&[], &[(alias, "9090")]);
        assert_ne!(c, base, "{alias} changed nothing");
        assert!(
            warnings.iter().any(|w| w.starts_with(alias)),
            "{warnings:?}"
        );
    }

    #[test]
    fn help_documents_every_variable_and_flag() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        for name in [
            ENV_EXTERNAL_SCALER_SERVICE,
            ENV_EXTERNAL_SCALER_PORT,
            ENV_LEGACY_EXTERNAL_SCALER_SERVICE,
            ENV_LEGACY_EXTERNAL_SCALER_PORT,
            ENV_NAMESPACE,
            ENV_WATCH_NAMESPACE,
            ENV_LEASE_DURATION,
            ENV_RENEW_DEADLINE,
            ENV_RETRY_PERIOD,
            "--metrics-bind-address",
            "--health-probe-bind-address",
            "--leader-elect",
            "--metrics-secure",
            "--metrics-auth",
            "--metrics-cert-dir",
            "--profiling-bind-address",
            "--zap-devel",
            "--zap-encoder",
            "--zap-log-level",
            "--zap-stacktrace-level",
            "--zap-time-encoding",
        ] {
            assert!(help.contains(name), "--help does not mention {name}");
        }
    }
}
