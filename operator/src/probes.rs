//! The operator's small HTTP endpoints: `/healthz` and `/readyz` on the probe listener,
//! `/metrics` on the metrics listener (optionally over TLS and behind a token check, see
//! [`crate::metrics_access`]). HTTP/1.1 and h2 through `keda_http_runtime::serve`; cancelling
//! `shutdown` closes the listener and every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use keda_http_runtime::serve::Limits;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::metrics_access::{Authorizer, Decision};

/// What the endpoints report.
#[derive(Debug, Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Ready from the start: a standby replica is healthy and ready too (only the leader
    /// reconciles, but every replica must pass its probes for a rollout to proceed).
    pub fn new() -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Marks the process as shutting down: `/readyz` answers 503 from now on.
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone)]
pub enum Endpoints {
    /// `/healthz`, `/readyz`.
    Probes(Health),
    /// `/metrics`, with an access check when `--metrics-auth` is on.
    Metrics {
        /// What to render.
        metrics: Metrics,
        /// Token check; `None` serves everyone.
        auth: Option<Arc<Authorizer>>,
    },
}

impl Endpoints {
    fn answer(&self, method: &Method, path: &str) -> (StatusCode, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        if method != Method::GET && method != Method::HEAD {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "method not allowed\n".to_owned(),
            );
        }
        match (self, path) {
            (Self::Probes(_), "/healthz" | "/livez") => (StatusCode::OK, TEXT, "ok\n".to_owned()),
            (Self::Probes(h), "/readyz") if h.is_ready() => {
                (StatusCode::OK, TEXT, "ok\n".to_owned())
            }
            (Self::Probes(_), "/readyz") => (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                "shutting down\n".to_owned(),
            ),
            (Self::Metrics { metrics: m, .. }, "/metrics") => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                m.render(),
            ),
            _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".to_owned()),
        }
    }

    /// The response to `req`, after the access check where one applies.
    async fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        const TEXT: &str = "text/plain; charset=utf-8";
        let denied = match self {
            Self::Metrics {
                auth: Some(auth), ..
            } if req.uri().path() == "/metrics" => {
                let header = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                match auth.check(header).await {
                    Decision::Allowed => None,
                    Decision::Unauthenticated => Some((StatusCode::UNAUTHORIZED, "Unauthorized\n")),
                    Decision::Forbidden => Some((StatusCode::FORBIDDEN, "Forbidden\n")),
                    Decision::Unavailable => Some((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "cannot check the token now\n",
                    )),
                }
            }
            _ => None,
        };
        let (status, content_type, body) = match denied {
            Some((status, body)) => (status, TEXT, body.to_owned()),
            None => self.answer(req.method(), req.uri().path()),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    }
}

/// Serves `endpoints` on `listener` until `shutdown` is cancelled, over TLS when `tls` is set;
/// open connections are then closed at once (their in-flight response may still finish).
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let endpoints = Arc::new(endpoints);
    let handler = move |req: Request<Incoming>, _peer: SocketAddr| {
        let endpoints = Arc::clone(&endpoints);
        async move { endpoints.respond(&req).await }
    };
    keda_http_runtime::serve::serve(
        listener,
        keda_http_runtime::serve::builder(Limits::default()),
        tls,
        handler,
        shutdown.clone(),
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_answer_as_expected() {
        let health = Health::new();
        let probes = Endpoints::Probes(health.clone());
        assert_eq!(probes.answer(&Method::GET, "/healthz").0, StatusCode::OK);
        assert_eq!(probes.answer(&Method::GET, "/readyz").0, StatusCode::OK);
        assert_eq!(
            probes.answer(&Method::GET, "/metrics").0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            probes.answer(&Method::POST, "/healthz").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        health.set_not_ready();
        assert_eq!(
            probes.answer(&Method::GET, "/readyz").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(probes.answer(&Method::GET, "/healthz").0, StatusCode::OK);
        let metrics = Endpoints::Metrics {
            metrics: Metrics::new(),
            auth: None,
        };
        let (status, _, body) = metrics.answer(&Method::GET, "/metrics");
        assert_eq!(status, StatusCode::OK);
        assert!(body.ends_with("# EOF\n"));
    }
}
