//! `keda-http-interceptor`: the HTTP data plane of keda-http.
//!
//! Owns the reverse proxy that routes by host, path prefix and headers, counts in-flight and
//! total requests per route, holds requests while a cold backend starts, and forwards to ready
//! endpoints. It also serves the admin port (`/queue`, `/readyz`, `/livez`) and metrics.
//! It does not decide replica counts (the scaler and KEDA do).
