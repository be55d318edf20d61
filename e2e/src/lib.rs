//! `keda-http-e2e`: the whole system on one machine.
//!
//! Owns the local cluster (an in-memory Kubernetes API stand-in, a workload simulator and a
//! KEDA stand-in), the end-to-end scenarios and the `demo` binary. None of it ships to users.
//!
//! Modules:
//! - [`apiserver`]: the in-memory Kubernetes API server ([`apiserver::LocalApiServer`]) with
//!   its kind registry (`kinds`), object store and event history (`store`), watches (`watch`),
//!   selectors (`selectors`), patch types (`patch`), discovery documents (`discovery`), HTTP
//!   routing (`http`), errors as Kubernetes `Status` (`error`), fault injection (`faults`)
//!   and seeding from YAML manifests (`manifests`). Its module docs list what is deliberately
//!   simplified. The `local-apiserver` binary runs it standalone.
//! - [`keda`]: the KEDA stand-in ([`keda::KedaStandIn`]): drives an external scaler over gRPC
//!   as KEDA does and plays the HPA (`decision` holds the formula and the scale executor).
//! - [`simulator`]: the workload simulator ([`simulator::Simulator`]): runs a Deployment's
//!   replicas as processes on loopback ports and publishes their EndpointSlices and the
//!   Deployment status. The `e2e-backend` binary is a minimal workload for its tests.
//! - [`harness`]: starts the API (local or `E2E_API=external`), the simulator, the KEDA
//!   stand-in and the product binaries, applies manifests and tears everything down.
//! - [`demo`]: the walk-through behind the `demo` binary (hello app 0 → N → 0 with a live
//!   timeline).
//!
//! The scenarios are the integration tests `tests/scenario_*.rs` (see `e2e/README.md`).

pub mod apiserver;
pub mod demo;
pub mod harness;
pub mod keda;
pub mod simulator;
