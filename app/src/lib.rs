//! `hello`: the small HTTP app that keda-http's examples and benchmarks scale.
//!
//! Owns an HTTP server that answers `/` with `Hello, Kubernetes with KEDA!`, `/healthz`, an
//! optional artificial delay, and graceful shutdown. It knows nothing about KEDA.
