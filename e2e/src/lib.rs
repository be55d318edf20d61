//! `keda-http-e2e`: the whole system on one machine.
//!
//! Owns the local cluster (an in-memory Kubernetes API stand-in, a workload simulator and a
//! KEDA stand-in), the end-to-end scenarios and the `demo` binary. None of it ships to users.
