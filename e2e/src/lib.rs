//! `keda-http-e2e`: the whole system on one machine.
//!
//! Owns the local cluster (a workload simulator and a KEDA stand-in around the Kubernetes API
//! stand-in), the end-to-end scenarios and the `demo` binary. None of it ships to users.
//!
//! The Kubernetes API stand-in it runs is the `kube-standin` crate
//! ([`kube_standin::LocalApiServer`]), the bottom layer that the programs' own integration tests
//! use too; this crate sits on top of the graph and no other crate depends on it.
//!
//! Modules:
//! - [`keda`]: the KEDA stand-in ([`keda::KedaStandIn`]): drives an external scaler over gRPC
//!   as KEDA does and plays the HPA (`decision` holds the formula and the scale executor).
//! - [`simulator`]: the workload simulator ([`simulator::Simulator`]): runs a Deployment's
//!   replicas as processes, each in a network-namespace test host on 198.51.100.0/24
//!   ([`simulator::hosts`]; loopback ports with `E2E_LOOPBACK_PODS=1`), and publishes their
//!   EndpointSlices and the Deployment status. The `e2e-backend` binary is a minimal workload for its tests.
//! - [`harness`]: starts the API (local or `E2E_API=external`), the simulator, the KEDA
//!   stand-in and the product binaries, applies manifests and tears everything down.
//! - [`demo`]: the walk-through behind the `demo` binary (hello app 0 → N → 0 with a live
//!   timeline).
//!
//! The scenarios are the integration tests `tests/scenario_*.rs` (see `e2e/README.md`).

pub mod demo;
pub mod harness;
pub mod keda;
pub mod simulator;
