//! Responses the interceptor answers itself: placeholders and static routes (reference §2.1
//! `StaticResponse`, §1.4 for the ConfigMap error cases), and static-route matching.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use keda_http_api::interceptor_route::{
    InterceptorRouteSpec, RoutingRule, StaticResponse, StaticRoute,
};

use crate::proxy::body::ProxyBody;
use crate::proxy::error::status_response;
use crate::routing::strip_port;

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

/// The first static route of `spec` with a rule matching the request (list order).
pub fn static_route<'a>(
    spec: &'a InterceptorRouteSpec,
    host: &str,
    path: &str,
    headers: &HeaderMap,
) -> Option<&'a StaticRoute> {
    spec.static_routes.iter().find(|route| {
        route
            .rules
            .iter()
            .any(|rule| rule_matches(rule, host, path, headers))
    })
}

/// Whether one routing rule matches; empty fields match everything. Hosts: exact
/// (case-insensitive, ports ignored), `*.suffix` (not the apex), `*` or empty. Paths:
/// segment-aware prefixes. Headers: all present, valued ones equal to one of the values.
pub fn rule_matches(rule: &RoutingRule, host: &str, path: &str, headers: &HeaderMap) -> bool {
    let host = strip_port(host);
    let host_ok = rule.hosts.is_empty()
        || rule.hosts.iter().any(|h| {
            let h = strip_port(h);
            if h.is_empty() || h == "*" {
                true
            } else if let Some(suffix) = h.strip_prefix("*.") {
                host.len() > suffix.len() + 1
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            } else {
                h.eq_ignore_ascii_case(host)
            }
        });
    let trimmed = path.trim_matches('/');
    let path_ok = rule.paths.is_empty()
        || rule.paths.iter().any(|p| {
            let prefix = p.value.trim_matches('/');
            prefix.is_empty()
                || trimmed == prefix
                || trimmed
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        });
    let headers_ok = rule.headers.iter().all(|m| {
        let Ok(name) = HeaderName::from_bytes(m.name.as_bytes()) else {
            return false;
        };
        let mut values = headers.get_all(&name).iter().peekable();
        match &m.value {
            None => values.peek().is_some(),
            Some(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
        }
    });
    host_ok && path_ok && headers_ok
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
    let mut content_type: Option<&'static str> = None;
    let body = if let Some(body) = &response.body {
        content_type = Some("text/plain; charset=utf-8");
        Bytes::from(body.clone())
    } else if let Some(cm) = &response.body_from_config_map {
        let (key, explicit) = match &cm.key {
            Some(key) => (key.clone(), true),
            None => {
                let key = path.trim_start_matches('/');
                (
                    if key.is_empty() {
                        "index.html".to_owned()
                    } else {
                        key.to_owned()
                    },
                    false,
                )
            }
        };
        match bodies.lookup(namespace, &cm.name, &key) {
            BodyLookup::Found(bytes) => {
                content_type = Some(content_type_of(&key));
                bytes
            }
            BodyLookup::NoKey if !explicit => Bytes::new(),
            BodyLookup::NoConfigMap | BodyLookup::NoKey => {
                tracing::warn!(namespace, configmap = %cm.name, %key, "response body not found");
                return status_response(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    } else if kind == Kind::Placeholder {
        if prefers_html(accept) {
            content_type = Some("text/html; charset=utf-8");
            Bytes::from_static(STARTING_PAGE.as_bytes())
        } else {
            content_type = Some("text/plain; charset=utf-8");
            Bytes::from_static(STARTING_TEXT.as_bytes())
        }
    } else {
        Bytes::new()
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

    use http_body_util::BodyExt;
    use keda_http_api::interceptor_route::{ConfigMapBodyRef, HeaderMatch, PathMatch};

    use super::*;

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

    #[test]
    fn rules_match_hosts_paths_and_headers() {
        let rule = RoutingRule {
            hosts: vec!["*.example.com".into(), "exact.org:8080".into()],
            paths: vec![PathMatch {
                value: "/api/".into(),
            }],
            headers: vec![HeaderMatch {
                name: "x-env".into(),
                value: Some("canary".into()),
            }],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-env", HeaderValue::from_static("canary"));
        assert!(rule_matches(&rule, "a.example.com", "/api/v1", &headers));
        assert!(rule_matches(&rule, "EXACT.org", "/api", &headers));
        assert!(!rule_matches(&rule, "example.com", "/api", &headers));
        assert!(!rule_matches(&rule, "a.example.com", "/apis", &headers));
        assert!(!rule_matches(
            &rule,
            "a.example.com",
            "/api",
            &HeaderMap::new()
        ));
        let any = RoutingRule {
            hosts: vec![],
            paths: vec![],
            headers: vec![],
        };
        assert!(rule_matches(&any, "x", "/", &HeaderMap::new()));
    }
}
