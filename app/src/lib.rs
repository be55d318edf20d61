//! `hello`: the small HTTP app that keda-http's examples and benchmarks scale.
//!
//! Owns an HTTP/1.1 + h2c server (see [`server`]) that answers:
//!
//! - `/` and any other path not listed below: `Hello, Kubernetes with KEDA!`, after an optional
//!   artificial delay (`DELAY_MS`, or `?delay_ms=` per request), capped at `MAX_DELAY_MS`
//!   (default 30 s). The delay actually applied is echoed in the `x-hello-delay-ms` response
//!   header, so a client can see when its request was capped.
//! - `/healthz`: `200 ok`, never delayed (for readiness and liveness probes).
//! - `/echo`: streams the request body back unchanged (for POST load tests).
//! - `/sse`: a few server-sent events with small gaps (for streaming pass-through tests).
//!
//! On SIGTERM or Ctrl-C it reports not-ready on `/healthz` and keeps serving for
//! `SHUTDOWN_DELAY_MS` (default 0), then stops accepting, lets in-flight requests finish
//! (bounded by `DRAIN_TIMEOUT_MS`) and exits 0. Configuration is in [`config`]. It knows nothing about KEDA.

pub mod config;
pub mod server;
pub mod telemetry;

pub use config::Config;
pub use server::{Error, Readiness, Server, State};
