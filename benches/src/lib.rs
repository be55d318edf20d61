//! `keda-http-benches`: the `cargo bench` suites of keda-http.
//!
//! Owns the micro benchmarks (routing, counting, endpoint selection) and the whole-proxy
//! load, cold-start and memory runs. It holds no product code.
