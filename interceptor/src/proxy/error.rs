//! Why a request was answered by the interceptor itself, and the one place that maps each
//! reason to a status code (reference §1.4).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::body::ProxyBody;

/// A request the interceptor answers itself instead of (or after failing at) forwarding.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the host, path and headers (also absolute-form request targets).
    #[error("no route matches the request")]
    NoRoute,
    /// The request is malformed in a way hyper let through (e.g. an invalid Host).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// `CONNECT`: the interceptor is not a forward proxy.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The target has no ready endpoint.
    #[error("no ready endpoint for {0}")]
    NoReadyEndpoint(String),
    /// Every connect attempt failed; the last failure was not a timeout.
    #[error("connect to upstream failed: {0}")]
    Connect(#[source] BoxError),
    /// Every connect attempt failed; the last one timed out.
    #[error("connect to upstream timed out")]
    ConnectTimeout,
    /// No response headers within the response-header timeout.
    #[error("upstream response headers timed out")]
    ResponseHeaderTimeout,
    /// The request deadline passed before the response headers arrived.
    #[error("request deadline exceeded")]
    RequestTimeout,
    /// The upstream exchange failed after connecting.
    #[error("upstream request failed: {0}")]
    Upstream(#[source] BoxError),
    /// The target's (or fallback's) Service has no port of that name or number.
    #[error("no such port on the Service of {0}")]
    UnknownPort(String),
    /// The target did not become ready within the readiness timeout or request deadline.
    #[error("target not ready in time")]
    ColdStartTimeout,
    /// The cold-start hold queue (per route or per interceptor) is full.
    #[error("cold-start hold queue full")]
    HoldQueueFull,
}

/// A boxed error at the client seam.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl ProxyError {
    /// The status code the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoReadyEndpoint(_) | Self::HoldQueueFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnknownPort(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Connect(_) | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout
            | Self::ResponseHeaderTimeout
            | Self::RequestTimeout
            | Self::ColdStartTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The response: status, `text/plain` body `"<Status Text>\n"` as Go's `http.Error` writes.
    pub fn into_response(self) -> Response<ProxyBody> {
        status_response(self.status())
    }
}

/// A plain-text response for `status`, as Go's `http.Error(w, StatusText(code), code)`.
pub fn status_response(status: StatusCode) -> Response<ProxyBody> {
    let text = status.canonical_reason().unwrap_or("Error");
    let mut body = String::with_capacity(text.len() + 1);
    body.push_str(text);
    body.push('\n');
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),
        );
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn io() -> BoxError {
        Box::new(std::io::Error::other("x"))
    }

    #[test]
    fn one_status_per_reason() {
        assert_eq!(ProxyError::NoRoute.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            ProxyError::BadRequest("host").status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ProxyError::MethodNotAllowed.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            ProxyError::NoReadyEndpoint("t".into()).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(ProxyError::Connect(io()).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            ProxyError::ConnectTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::ResponseHeaderTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::RequestTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(ProxyError::Upstream(io()).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            ProxyError::UnknownPort("t".into()).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ProxyError::ColdStartTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::HoldQueueFull.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn body_is_go_http_error_text() {
        let response = ProxyError::NoRoute.into_response();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"Not Found\n");
        let response = ProxyError::ConnectTimeout.into_response();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"Gateway Timeout\n");
    }
}
