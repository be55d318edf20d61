//! `keda-http-scaler`: the KEDA external scaler of keda-http.
//!
//! Owns the `externalscaler.ExternalScaler` gRPC service, interceptor discovery, the
//! aggregation of the interceptors' counts and request-rate buckets. It does not proxy traffic
//! and does not write Kubernetes objects.
