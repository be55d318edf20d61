//! `keda-http-interceptor`: the HTTP data plane of keda-http.
pub mod config;
pub mod endpoints;
pub mod queue;
pub mod routing;
