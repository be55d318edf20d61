//! `keda-http-api`: the shared contract of keda-http.
//!
//! Owns the Kubernetes custom resource types (`InterceptorRoute` v1beta1 and
//! `HTTPScaledObject` v1alpha1), the subset of KEDA's `ScaledObject` that the operator
//! writes, Go-style duration parsing, and the interceptor → scaler wire format (`/queue`).
//! It does not talk to Kubernetes or the network; the programs do.
