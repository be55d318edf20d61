//! Every response the interceptor makes itself, in one place: the error responses (the one
//! mapping from [`ProxyError`] to a status code, compat §1.4), cold-start placeholders
//! (including the answer to a full hold queue with `overflow: Placeholder`) and static-route
//! responses (compat §2.1 `StaticResponse`), with their `bodyFromConfigMap` bodies
//! ([`BodySource`]).

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use keda_http_api::interceptor_route::{ConfigMapBodyRef, StaticResponse};

use super::body::ProxyBody;
use super::error::ProxyError;

impl ProxyError {
    /// The status code the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadRequest(_) | Self::ClientBody => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoReadyEndpoint(_) | Self::HoldQueueFull | Self::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::UnknownPort(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Connect(_) | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout
            | Self::ResponseHeaderTimeout
            | Self::RequestTimeout
            | Self::ColdStartTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The response: status, `text/plain` body `"<Status Text>\n"` as Go's `http.Error` writes.
    /// A held request answered at shutdown, or a client whose body broke its framing, also
    /// gets `Connection: close`: the connection is not used again.
    pub fn into_response(self) -> Response<ProxyBody> {
        let mut response = status_response(self.status());
        if matches!(self, Self::ShuttingDown | Self::ClientBody) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
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

/// The result of looking up a ConfigMap body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyLookup {
    /// No labelled ConfigMap of that name.
    NoConfigMap,
    /// The ConfigMap has no such key (in `data` or `binaryData`).
    NoKey,
    /// The body.
    Found(Bytes),
}

/// Where `bodyFromConfigMap` bodies come from.
pub trait BodySource: Send + Sync + 'static {
    /// The value of `key` in ConfigMap `namespace/name`.
    fn lookup(&self, namespace: &str, name: &str, key: &str) -> BodyLookup;
}

/// No ConfigMaps (running without Kubernetes).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoBodies;

impl BodySource for NoBodies {
    fn lookup(&self, _: &str, _: &str, _: &str) -> BodyLookup {
        BodyLookup::NoConfigMap
    }
}

/// What kind of interceptor-made response this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A cold-start placeholder (default 503; a "starting up" text or page without a body).
    Placeholder,
    /// A static route (default 200; empty without a body).
    Static,
}

/// Builds a static or placeholder response for a request to `path` in `namespace`.
pub fn respond(
    response: &StaticResponse,
    kind: Kind,
    namespace: &str,
    path: &str,
    accept: Option<&HeaderValue>,
    bodies: &dyn BodySource,
) -> Response<ProxyBody> {
    let default = match kind {
        Kind::Placeholder => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Static => StatusCode::OK,
    };
    let status = response
        .status_code
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(default);
    let Some((body, content_type)) = body_of(response, kind, namespace, path, accept, bodies)
    else {
        return status_response(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let mut out = Response::new(ProxyBody::full(body));
    *out.status_mut() = status;
    let headers = out.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if kind == Kind::Placeholder {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
    }
    for (name, value) in &response.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.insert(name, value);
            }
            _ => tracing::debug!(%name, "skipping an invalid static response header"),
        }
    }
    out
}

/// The body of a static or placeholder response and its Content-Type: the inline body, the
/// ConfigMap body, the default "starting up" text or page of a placeholder, else empty.
/// `None` when a named ConfigMap body is missing (the caller answers 500).
fn body_of(
    response: &StaticResponse,
    kind: Kind,
    namespace: &str,
    path: &str,
    accept: Option<&HeaderValue>,
    bodies: &dyn BodySource,
) -> Option<(Bytes, Option<&'static str>)> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if let Some(body) = &response.body {
        return Some((Bytes::from(body.clone()), Some(PLAIN)));
    }
    if let Some(cm) = &response.body_from_config_map {
        return configmap_body(cm, namespace, path, bodies);
    }
    Some(match kind {
        Kind::Placeholder if prefers_html(accept) => (
            Bytes::from_static(STARTING_PAGE.as_bytes()),
            Some("text/html; charset=utf-8"),
        ),
        Kind::Placeholder => (Bytes::from_static(STARTING_TEXT.as_bytes()), Some(PLAIN)),
        Kind::Static => (Bytes::new(), None),
    })
}

/// A `bodyFromConfigMap` body: the explicit key (must exist), else the request path
/// (`index.html` for `/`; a missing derived key gives an empty body).
fn configmap_body(
    cm: &ConfigMapBodyRef,
    namespace: &str,
    path: &str,
    bodies: &dyn BodySource,
) -> Option<(Bytes, Option<&'static str>)> {
    let (key, explicit) = match &cm.key {
        Some(key) => (key.clone(), true),
        None => {
            let key = path.trim_start_matches('/');
            let key = if key.is_empty() { "index.html" } else { key };
            (key.to_owned(), false)
        }
    };
    match bodies.lookup(namespace, &cm.name, &key) {
        BodyLookup::Found(bytes) => Some((bytes, Some(content_type_of(&key)))),
        BodyLookup::NoKey if !explicit => Some((Bytes::new(), None)),
        BodyLookup::NoConfigMap | BodyLookup::NoKey => {
            tracing::warn!(namespace, configmap = %cm.name, %key, "response body not found");
            None
        }
    }
}

/// Plain-text placeholder body when none is configured.
pub const STARTING_TEXT: &str = "The application is starting up; please retry in a moment.\n";

/// HTML placeholder body when none is configured and the client prefers HTML: it reloads
/// itself every 2 seconds.
pub const STARTING_PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"2\"><title>Starting up</title></head>\
<body style=\"font-family:sans-serif;text-align:center;margin-top:20vh\">\
<h1>Starting up&hellip;</h1><p>The application is waking up. This page reloads by itself.</p>\
</body></html>\n";

/// Whether `Accept` ranks `text/html` above zero and at least as high as `text/plain`
/// (explicit media ranges only; `*/*` alone means plain text).
pub fn prefers_html(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    let mut html: Option<f32> = None;
    let mut plain: Option<f32> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if media.eq_ignore_ascii_case("text/html") {
            html = Some(q);
        } else if media.eq_ignore_ascii_case("text/plain") {
            plain = Some(q);
        }
    }
    html.is_some_and(|h| h > 0.0 && h >= plain.unwrap_or(0.0))
}

/// The Content-Type for a ConfigMap key, by extension.
pub fn content_type_of(key: &str) -> &'static str {
    let ext = key.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use http::HeaderMap;
    use http_body_util::BodyExt;

    use super::*;
    use crate::proxy::error::BoxError;

    struct OneMap;
    impl BodySource for OneMap {
        fn lookup(&self, namespace: &str, name: &str, key: &str) -> BodyLookup {
            match (namespace, name, key) {
                ("ns", "pages", "index.html") => {
                    BodyLookup::Found(Bytes::from_static(b"<p>hi</p>"))
                }
                ("ns", "pages", _) => BodyLookup::NoKey,
                _ => BodyLookup::NoConfigMap,
            }
        }
    }

    async fn parts(r: Response<ProxyBody>) -> (StatusCode, HeaderMap, Bytes) {
        let (p, b) = r.into_parts();
        (
            p.status,
            p.headers,
            b.collect().await.expect("body").to_bytes(),
        )
    }

    fn from_cm(key: Option<&str>) -> StaticResponse {
        StaticResponse {
            body_from_config_map: Some(ConfigMapBodyRef {
                name: "pages".into(),
                key: key.map(Into::into),
            }),
            ..StaticResponse::default()
        }
    }

    #[tokio::test]
    async fn configmap_key_rules() {
        let r = respond(&from_cm(None), Kind::Placeholder, "ns", "/", None, &OneMap);
        let (status, headers, body) = parts(r).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(&body[..], b"<p>hi</p>");
        // Derived key missing: the configured status with an empty body.
        let r = respond(&from_cm(None), Kind::Static, "ns", "/x.css", None, &OneMap);
        let (status, _, body) = parts(r).await;
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        // Explicit key missing, or no ConfigMap: 500.
        let r = respond(
            &from_cm(Some("nope")),
            Kind::Static,
            "ns",
            "/",
            None,
            &OneMap,
        );
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let r = respond(&from_cm(None), Kind::Static, "other", "/", None, &OneMap);
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn placeholder_defaults_follow_accept() {
        let html = HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8");
        let r = respond(
            &StaticResponse::default(),
            Kind::Placeholder,
            "ns",
            "/",
            Some(&html),
            &NoBodies,
        );
        let (status, headers, body) = parts(r).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert!(
            std::str::from_utf8(&body)
                .expect("utf-8")
                .contains("http-equiv=\"refresh\"")
        );
        let any = HeaderValue::from_static("*/*");
        let r = respond(
            &StaticResponse::default(),
            Kind::Placeholder,
            "ns",
            "/",
            Some(&any),
            &NoBodies,
        );
        let (_, headers, body) = parts(r).await;
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(&body[..], STARTING_TEXT.as_bytes());
        let custom = StaticResponse {
            status_code: Some(418),
            body: Some("tea".into()),
            headers: BTreeMap::from([("x-a".to_owned(), "1".to_owned())]),
            ..StaticResponse::default()
        };
        let (status, headers, body) = parts(respond(
            &custom,
            Kind::Placeholder,
            "ns",
            "/",
            None,
            &NoBodies,
        ))
        .await;
        assert_eq!((status.as_u16(), &body[..]), (418, &b"tea"[..]));
        assert_eq!(headers["x-a"], "1");
    }

    #[test]
    fn accept_preference() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(prefers_html(Some(&h("text/html"))));
        assert!(!prefers_html(Some(&h("text/plain, text/html;q=0.5"))));
        assert!(!prefers_html(Some(&h("text/html;q=0"))));
        assert!(!prefers_html(Some(&h("application/json"))));
        assert!(!prefers_html(None));
    }

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
        assert_eq!(ProxyError::ClientBody.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            ProxyError::ShuttingDown.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn held_request_at_shutdown_gets_retry_after_and_close() {
        let response = ProxyError::ShuttingDown.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONNECTION], "close");
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
