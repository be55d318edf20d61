//! `keda-http-scaler`: the KEDA external scaler of keda-http.
//!
//! Owns the `externalscaler.ExternalScaler` gRPC service KEDA calls ([`grpc`], contract in
//! [`proto`]), interceptor discovery from the admin Service's EndpointSlices ([`discovery`]),
//! polling each interceptor's `/queue` (`pinger`, [`fetch`]) and following its
//! `/queue/watch` push stream (`push`), the aggregation of their counts ([`aggregate`]) and
//! request-rate windows ([`rate`]), gRPC health ([`health`]), Prometheus metrics ([`metrics`])
//! and configuration ([`config`]). It does not proxy traffic and does not write Kubernetes
//! objects.
//!
//! In-process use (tests, the local cluster):
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use keda_http_scaler::{Scaler, Settings, discovery, metrics::Metrics, targets::StaticTargets};
//!
//! let (_set, interceptors) = discovery::fixed(["127.0.0.1:9090".parse()?]);
//! let targets = Arc::new(StaticTargets::new());
//! let mut registry = prometheus_client::registry::Registry::default();
//! let scaler = Scaler::new(Settings::default(), interceptors, targets, Metrics::register(&mut registry));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! scaler.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! KEDA's side of the contract is the generated client
//! [`proto::external_scaler_client::ExternalScalerClient`].

pub mod aggregate;
pub mod config;
pub mod discovery;
pub mod fetch;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod naming;
mod pinger;
pub mod proto;
mod push;
pub mod rate;
mod server;
pub mod targets;
pub mod telemetry;

pub use server::{Error, Scaler, Settings};
