//! The `check` phase: what hyper lets through but the interceptor refuses, before any lookup
//! (compat §1.3, §1.4). `CONNECT` → 405; an absolute-form HTTP/1 request target → 404 (never
//! an open proxy); a missing (HTTP/1.1), repeated or malformed `Host` → 400; both
//! `Content-Length` and `Transfer-Encoding` → 400 (detected by [`super::framing`],
//! since hyper drops the Content-Length of such a request). hyper itself answers malformed
//! request lines and headers (400), oversized header sections (431) and slow headers (the
//! header-read timeout closes the connection).

use http::header::{self, HeaderValue};
use http::{Method, Request, Version};

use super::error::ProxyError;
use super::framing;

/// Validates `req` and returns its host (visible ASCII, authority characters only).
pub fn check<B>(req: &Request<B>) -> Result<HeaderValue, ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    if req.version() < Version::HTTP_2 && req.uri().scheme().is_some() {
        // Absolute-form target: we are not a forward proxy.
        return Err(ProxyError::NoRoute);
    }
    if req
        .extensions()
        .get::<framing::AmbiguousFraming>()
        .is_some()
        || (req.headers().contains_key(header::CONTENT_LENGTH)
            && req.headers().contains_key(header::TRANSFER_ENCODING))
    {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    request_host(req)
}

/// The request's host: `Host` for HTTP/1 (required for 1.1, at most one), else the URI
/// authority (h2 `:authority`), else `Host`. Only RFC 3986 authority characters are allowed.
fn request_host<B>(req: &Request<B>) -> Result<HeaderValue, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header_host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("repeated Host"));
    }
    let host = match (req.version(), header_host, req.uri().authority()) {
        (Version::HTTP_2 | Version::HTTP_3, _, Some(authority)) => {
            HeaderValue::from_str(authority.as_str())
                .map_err(|_| ProxyError::BadRequest("invalid Host"))?
        }
        (_, Some(h), _) => h.clone(),
        (Version::HTTP_10 | Version::HTTP_09, None, _) => HeaderValue::from_static(""),
        _ => return Err(ProxyError::BadRequest("missing Host")),
    };
    if !host.as_bytes().iter().all(|&b| is_authority_byte(b)) {
        return Err(ProxyError::BadRequest("invalid Host"));
    }
    Ok(host)
}

fn is_authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'%'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, uri: &str, hosts: &[&'static str]) -> Request<()> {
        let mut req = Request::builder().version(version).uri(uri);
        for host in hosts {
            req = req.header(header::HOST, *host);
        }
        req.body(()).expect("request")
    }

    fn status(result: Result<HeaderValue, ProxyError>) -> Result<String, u16> {
        result
            .map(|h| h.to_str().expect("ascii").to_owned())
            .map_err(|e| e.status().as_u16())
    }

    #[test]
    fn the_host_comes_from_host_or_the_h2_authority() {
        let h1 = request(Version::HTTP_11, "/a", &["app.example.com:8080"]);
        assert_eq!(status(check(&h1)), Ok("app.example.com:8080".into()));
        let h2 = request(Version::HTTP_2, "http://h2.example.com/a", &["other"]);
        assert_eq!(status(check(&h2)), Ok("h2.example.com".into()));
        let h10 = request(Version::HTTP_10, "/", &[]);
        assert_eq!(status(check(&h10)), Ok(String::new()));
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert_eq!(
            status(check(&request(Version::HTTP_11, "/", &[]))),
            Err(400)
        );
        assert_eq!(
            status(check(&request(Version::HTTP_11, "/", &["a", "b"]))),
            Err(400)
        );
        assert_eq!(
            status(check(&request(Version::HTTP_11, "/", &["a b"]))),
            Err(400)
        );
        assert_eq!(
            status(check(&request(Version::HTTP_11, "http://x/", &["x"]))),
            Err(404)
        );
        let mut connect = request(Version::HTTP_11, "/", &["x"]);
        *connect.method_mut() = Method::CONNECT;
        assert_eq!(status(check(&connect)), Err(405));
        let mut framing = request(Version::HTTP_11, "/", &["x"]);
        framing
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1"));
        framing.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(status(check(&framing)), Err(400));
    }
}
