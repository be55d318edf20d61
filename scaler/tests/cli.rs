//! The binary's command line: `--help` documents every setting with its environment variable;
//! an invalid value exits 64 with one line naming the variable.

use std::process::Command;

use keda_http_scaler::config;

fn scaler() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keda-http-scaler"));
    // Start from a clean slate whatever the caller's environment holds.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("KEDA_HTTP_")
            || key.starts_with("OTEL_")
            || key == "PROFILING_BIND_ADDRESS"
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn help_documents_every_setting_and_its_variable() {
    let out = scaler().arg("--help").output().expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8");
    for env in [
        config::ENV_PORT,
        config::ENV_BIND_ADDRESS,
        config::ENV_TARGET_ADMIN_NAMESPACE,
        config::ENV_TARGET_ADMIN_SERVICE,
        config::ENV_TARGET_ADMIN_DEPLOYMENT,
        config::ENV_TARGET_ADMIN_PORT,
        config::ENV_TARGET_ADMIN_PORT_NAME,
        config::ENV_RESYNC_PERIOD,
        config::ENV_QUEUE_TICK,
        config::ENV_STREAM_INTERVAL_MS,
        config::ENV_FETCH_TIMEOUT,
        config::ENV_PUSH,
        config::ENV_DRAIN_TIMEOUT,
        config::ENV_PROM_ENABLED,
        config::ENV_PROM_PORT,
        config::ENV_PROFILING,
        config::ENV_OTLP_METRICS,
        config::ENV_OTLP_TRACES,
        config::ENV_OTLP_TRACES_PROTOCOL,
        config::ENV_LOG_LEVEL,
        config::ENV_LOG_FORMAT,
    ] {
        assert!(
            help.contains(&format!("[env: {env}")),
            "{env} missing from --help:\n{help}"
        );
    }
    for flag in [
        "--zap-log-level",
        "--zap-encoder",
        "--zap-time-encoding",
        "--zap-devel",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn invalid_values_exit_64_with_one_line() {
    let out = scaler()
        .env(config::ENV_TARGET_ADMIN_NAMESPACE, "keda")
        .env(config::ENV_TARGET_ADMIN_SERVICE, "admin")
        .env(config::ENV_TARGET_ADMIN_PORT, "9090")
        .env(config::ENV_QUEUE_TICK, "soon")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("KEDA_HTTP_QUEUE_TICK_DURATION"), "{err}");

    let out = scaler()
        .env(config::ENV_TARGET_ADMIN_NAMESPACE, "keda")
        .env(config::ENV_TARGET_ADMIN_SERVICE, "admin")
        .env(config::ENV_TARGET_ADMIN_PORT, "not-a-port")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert!(err.contains("KEDA_HTTP_SCALER_TARGET_ADMIN_PORT"), "{err}");
}

#[test]
fn missing_required_settings_exit_64_naming_them() {
    let out = scaler().output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for env in [
        config::ENV_TARGET_ADMIN_NAMESPACE,
        config::ENV_TARGET_ADMIN_SERVICE,
        config::ENV_TARGET_ADMIN_PORT,
    ] {
        assert!(err.contains(env), "{env} not named in {err}");
    }
}
