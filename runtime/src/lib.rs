//! Process set-up shared by the keda-http binaries (interceptor, scaler, operator, hello app).
//!
//! It owns the plumbing every binary needs before and around its own work: parsing flags and
//! environment variables into a clap `Parser` with a one-line error and exit status 64
//! ([`config`]), tracing set-up with the controller-runtime `--zap-*` flags ([`logging`]), the
//! SIGTERM/SIGINT future ([`signal`]), one HTTP accept loop with graceful and hard stop
//! ([`serve`]), one reflector helper for Kubernetes watches ([`watch`]) and the `process_*`
//! metrics collector ([`process`]).
//!
//! It does not own any program's settings, routes or protocols, and depends on no other
//! keda-http crate.

pub mod config;
pub mod logging;
pub mod otel;
pub mod process;
pub mod serve;
pub mod signal;
pub mod watch;
