//! Forwarding to a ready endpoint: request/response header rewriting, the pooled upstream
//! clients (HTTP/1.1 through hyper-util's legacy client, h2c through one multiplexed
//! connection per endpoint), connect retries and timeouts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::UpstreamBody;
use super::error::ProxyError;
use crate::endpoints::{AppProtocol, Pool};

/// Connect attempts per request, each on a different ready endpoint.
pub const MAX_CONNECT_ATTEMPTS: usize = 3;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1 and the usual
/// legacy ones, as Go's ReverseProxy removes them).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    PROXY_CONNECTION,
    KEEP_ALIVE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether the `Connection` header lists `token` (case-insensitive).
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Whether an HTTP/1.1 request asks for a protocol upgrade (e.g. WebSocket).
pub fn is_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && connection_has(headers, "upgrade")
}

/// Removes hop-by-hop headers, including those named by `Connection`. With `upgrade`, the
/// `Upgrade` header is kept and `Connection: upgrade` re-added. `TE: trailers` is kept
/// (gRPC needs it).
///
/// One pass over the header names finds which hop-by-hop headers are present; only those are
/// removed, and `Connection` tokens are parsed only when `Connection` is present.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let mut present: u16 = 0;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    // Bit 0 is `Connection`: remove the headers its tokens name (rare beyond
    // keep-alive/close/upgrade). Values are cheap `Bytes` clones, read before any removal.
    if present & 1 != 0 {
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let rest: Vec<HeaderValue> = values.cloned().collect();
        for value in first.iter().chain(&rest) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            for token in value.split(',').map(str::trim) {
                // `Connection` itself goes below with the fixed list; `TE` is handled there.
                if token.eq_ignore_ascii_case("te")
                    || token.eq_ignore_ascii_case("connection")
                    || (upgrade && token.eq_ignore_ascii_case("upgrade"))
                {
                    continue;
                }
                // By `&str`: lower-cased on the stack, no allocated `HeaderName`; an invalid
                // name matches nothing.
                headers.remove(token);
            }
        }
    }
    // Bit 5 is `TE`.
    let te_trailers = present & (1 << 5) != 0
        && headers.get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) == 0 || (upgrade && name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut bytes::BytesMut, mut n: u16) {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10` is a single digit.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Appends `ip` as text, exactly as its `Display` would; IPv4 by hand (the formatter
/// machinery costs more than the whole write on the request path).
fn push_ip(out: &mut bytes::BytesMut, ip: std::net::IpAddr) {
    use std::fmt::Write as _;
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            push_decimal(out, a.into());
            for octet in [b, c, d] {
                out.extend_from_slice(b".");
                push_decimal(out, octet.into());
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `addr` as an authority (`ip:port`, `[ip6]:port`), as its `Display` would write it.
fn socket_authority(addr: SocketAddr) -> Option<Authority> {
    let mut out = bytes::BytesMut::with_capacity(21);
    match addr {
        SocketAddr::V4(v4) => {
            push_ip(&mut out, std::net::IpAddr::V4(*v4.ip()));
            out.extend_from_slice(b":");
            push_decimal(&mut out, v4.port());
        }
        SocketAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
    Authority::from_maybe_shared(out.freeze()).ok()
}

/// Appends the client address to `X-Forwarded-For` and sets `X-Forwarded-Host`/`-Proto`
/// unless the client sent them. One allocation (the new `X-Forwarded-For` value).
pub fn set_forwarded(headers: &mut HeaderMap, client: SocketAddr, host: &HeaderValue, https: bool) {
    let prior_len: usize = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(|v| v.len() + 2)
        .sum();
    let mut value = bytes::BytesMut::with_capacity(prior_len + 39);
    for prior in &headers.get_all(&X_FORWARDED_FOR) {
        if !value.is_empty() {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(prior.as_bytes());
    }
    if !value.is_empty() {
        value.extend_from_slice(b", ");
    }
    push_ip(&mut value, client.ip());
    if let Ok(value) = HeaderValue::from_maybe_shared(value.freeze()) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if https { "https" } else { "http" }),
        );
    }
}

/// The upstream side of the proxy: connection pools and the timeouts of one attempt.
pub struct Upstream {
    http1: Client<HttpConnector, UpstreamBody>,
    h2: Mutex<HashMap<SocketAddr, http2::SendRequest<UpstreamBody>>>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// Why one connect attempt failed.
enum AttemptError {
    /// Nothing was sent; another endpoint may be tried with the same request.
    Connect {
        timeout: bool,
        error: super::error::BoxError,
    },
    /// The exchange failed after connecting.
    Upstream(super::error::BoxError),
}

impl Upstream {
    /// Pools with `max_idle_per_host` idle HTTP/1.1 connections per endpoint.
    pub fn new(connect_timeout: Duration, max_idle_per_host: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(max_idle_per_host)
            .build(connector);
        Self {
            http1,
            h2: Mutex::new(HashMap::new()),
            connect_timeout,
        }
    }

    /// Sends `request` to a ready endpoint of `pool`, retrying on another ready endpoint when
    /// connecting fails before anything was sent (at most [`MAX_CONNECT_ATTEMPTS`]).
    /// `host` is the client's authority, preserved as `Host` (HTTP/1.1) or `:authority` (h2).
    /// The response-header timeout (zero: none) bounds each attempt.
    pub async fn send(
        &self,
        pool: &Pool,
        request: Request<Incoming>,
        host: &HeaderValue,
        response_header_timeout: Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        let protocol = pool.app_protocol();
        let (mut parts, mut body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // Extensions (e.g. hyper's upgrade handle) stay with the client request.
        parts.extensions = http::Extensions::new();
        // Endpoints already tried (on the stack: no allocation).
        let mut tried = [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_CONNECT_ATTEMPTS];
        let mut last_timeout = false;
        let mut last_error: Option<super::error::BoxError> = None;
        for attempt in 0..MAX_CONNECT_ATTEMPTS {
            let Some(addr) = pool.pick(&tried[..attempt]) else {
                break;
            };
            tried[attempt] = addr;
            let more =
                attempt + 1 < MAX_CONNECT_ATTEMPTS && pool.current().ready.len() > attempt + 1;
            match protocol {
                AppProtocol::Http1 => {
                    let headers = if more {
                        parts.headers.clone()
                    } else {
                        std::mem::take(&mut parts.headers)
                    };
                    let (upstream_body, reclaim) = UpstreamBody::reclaimable(body);
                    let mut req = Request::new(upstream_body);
                    *req.method_mut() = parts.method.clone();
                    *req.uri_mut() = endpoint_uri(addr, &path);
                    *req.version_mut() = Version::HTTP_11;
                    *req.headers_mut() = headers;
                    if !req.headers().contains_key(header::HOST) {
                        req.headers_mut().insert(header::HOST, host.clone());
                    }
                    match with_timeout(response_header_timeout, self.send_http1(req)).await {
                        Ok(response) => return Ok(response),
                        Err(AttemptError::Upstream(e)) => return Err(upstream_error(e)),
                        Err(AttemptError::Connect { timeout, error }) => {
                            tracing::debug!(%addr, %error, timeout, "upstream connect failed");
                            match reclaim.await {
                                Ok(returned) if more => body = returned,
                                // Out of attempts, or the body was consumed: give up.
                                _ => return Err(connect_error(timeout, error)),
                            }
                            last_timeout = timeout;
                            last_error = Some(error);
                        }
                    }
                }
                AppProtocol::H2c => match self.h2_sender(addr).await {
                    Err(AttemptError::Connect { timeout, error }) => {
                        tracing::debug!(%addr, %error, timeout, "upstream connect failed");
                        last_timeout = timeout;
                        last_error = Some(error);
                    }
                    Err(AttemptError::Upstream(e)) => return Err(upstream_error(e)),
                    Ok(sender) => {
                        let headers = std::mem::take(&mut parts.headers);
                        let mut req = Request::new(UpstreamBody::once(body));
                        *req.method_mut() = parts.method.clone();
                        *req.uri_mut() = authority_uri(host.to_str().unwrap_or(""), &path)
                            .unwrap_or_else(|| endpoint_uri(addr, &path));
                        *req.version_mut() = Version::HTTP_2;
                        *req.headers_mut() = headers;
                        req.headers_mut().remove(header::HOST);
                        let sent =
                            with_timeout(response_header_timeout, self.send_h2(addr, sender, req))
                                .await;
                        return match sent {
                            Ok(response) => Ok(response),
                            Err(AttemptError::Upstream(e)) => Err(upstream_error(e)),
                            Err(AttemptError::Connect { timeout, error }) => {
                                Err(connect_error(timeout, error))
                            }
                        };
                    }
                },
            }
        }
        match last_error {
            None => Err(ProxyError::NoReadyEndpoint(pool.target().to_string())),
            Some(error) => Err(connect_error(last_timeout, error)),
        }
    }

    /// Sends `request` to a Service address `authority` (`<svc>.<ns>:<port>`) instead of a
    /// picked endpoint: the `KEDA_HTTP_DIRECT_POD_ROUTING=false` mode, where the cluster's DNS
    /// and kube-proxy choose the pod. No connect retries (kube-proxy balances).
    pub async fn send_to_service(
        &self,
        authority: &str,
        protocol: AppProtocol,
        request: Request<Incoming>,
        host: &HeaderValue,
        response_header_timeout: Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.extensions = http::Extensions::new();
        let sent = match protocol {
            AppProtocol::Http1 => {
                let Some(uri) = authority_uri(authority, &path) else {
                    return Err(ProxyError::Upstream(
                        format!("invalid Service address {authority}").into(),
                    ));
                };
                let mut req = Request::new(UpstreamBody::once(body));
                *req.method_mut() = parts.method;
                *req.uri_mut() = uri;
                *req.version_mut() = Version::HTTP_11;
                *req.headers_mut() = parts.headers;
                if !req.headers().contains_key(header::HOST) {
                    req.headers_mut().insert(header::HOST, host.clone());
                }
                with_timeout(response_header_timeout, self.send_http1(req)).await
            }
            AppProtocol::H2c => {
                let addr = match tokio::net::lookup_host(authority).await {
                    Ok(mut addrs) => addrs.next(),
                    Err(error) => {
                        return Err(ProxyError::Connect(Box::new(error)));
                    }
                };
                let Some(addr) = addr else {
                    return Err(ProxyError::Connect(
                        format!("{authority} resolved to no address").into(),
                    ));
                };
                match self.h2_sender(addr).await {
                    Err(error) => Err(error),
                    Ok(sender) => {
                        let mut req = Request::new(UpstreamBody::once(body));
                        *req.method_mut() = parts.method;
                        *req.uri_mut() = authority_uri(host.to_str().unwrap_or(""), &path)
                            .unwrap_or_else(|| endpoint_uri(addr, &path));
                        *req.version_mut() = Version::HTTP_2;
                        *req.headers_mut() = parts.headers;
                        req.headers_mut().remove(header::HOST);
                        with_timeout(response_header_timeout, self.send_h2(addr, sender, req)).await
                    }
                }
            }
        };
        match sent {
            Ok(response) => Ok(response),
            Err(AttemptError::Upstream(e)) => Err(upstream_error(e)),
            Err(AttemptError::Connect { timeout, error }) => Err(connect_error(timeout, error)),
        }
    }

    async fn send_http1(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, AttemptError> {
        self.http1.request(req).await.map_err(|e| {
            if e.is_connect() {
                let timeout = is_timeout(&e);
                AttemptError::Connect {
                    timeout,
                    error: Box::new(e),
                }
            } else {
                AttemptError::Upstream(Box::new(e))
            }
        })
    }

    /// Sends on a cached h2c connection; if that connection turns out to be dead before the
    /// request was sent, the request comes back and goes out once more on a new connection.
    async fn send_h2(
        &self,
        addr: SocketAddr,
        mut sender: http2::SendRequest<UpstreamBody>,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, AttemptError> {
        let mut error = match sender.try_send_request(req).await {
            Ok(response) => return Ok(response),
            Err(error) => error,
        };
        let Some(req) = error.take_message() else {
            return Err(AttemptError::Upstream(Box::new(error.into_error())));
        };
        tracing::debug!(%addr, "cached h2c connection was closed; reconnecting");
        self.h2
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&addr);
        let mut sender = self.h2_sender(addr).await?;
        sender
            .send_request(req)
            .await
            .map_err(|e| AttemptError::Upstream(Box::new(e)))
    }

    /// The h2c connection to `addr`, established (within the connect timeout) if needed.
    async fn h2_sender(
        &self,
        addr: SocketAddr,
    ) -> Result<http2::SendRequest<UpstreamBody>, AttemptError> {
        {
            let conns = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(sender) = conns.get(&addr)
                && !sender.is_closed()
            {
                return Ok(sender.clone());
            }
        }
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => {
                    return Err(AttemptError::Connect {
                        timeout: true,
                        error: "connect timed out".into(),
                    });
                }
                Ok(Err(e)) => {
                    return Err(AttemptError::Connect {
                        timeout: false,
                        error: Box::new(e),
                    });
                }
                Ok(Ok(stream)) => stream,
            };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| AttemptError::Connect {
                timeout: false,
                error: Box::new(e),
            })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%addr, %error, "h2c upstream connection ended");
            }
        });
        let mut conns = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|_, s| !s.is_closed());
        conns.insert(addr, sender.clone());
        Ok(sender)
    }
}

async fn with_timeout<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, AttemptError>>,
) -> Result<T, AttemptError> {
    if limit.is_zero() {
        return fut.await;
    }
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(AttemptError::Upstream(Box::new(ResponseHeaderTimeout))),
    }
}

/// Marker error: the response headers did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("response header timeout")]
struct ResponseHeaderTimeout;

fn upstream_error(error: super::error::BoxError) -> ProxyError {
    if error.is::<ResponseHeaderTimeout>() {
        ProxyError::ResponseHeaderTimeout
    } else {
        ProxyError::Upstream(error)
    }
}

fn connect_error(timeout: bool, error: super::error::BoxError) -> ProxyError {
    if timeout {
        ProxyError::ConnectTimeout
    } else {
        ProxyError::Connect(error)
    }
}

fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if e.to_string().contains("timed out") || e.to_string().contains("timeout") {
            return true;
        }
        source = e.source();
    }
    false
}

fn endpoint_uri(addr: SocketAddr, path: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = socket_authority(addr);
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).unwrap_or_default()
}

fn authority_uri(host: &str, path: &PathAndQuery) -> Option<Uri> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(Authority::try_from(host).ok()?);
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-keep"], "1");
    }

    /// The previous implementation (remove every listed name, collect `Connection` tokens),
    /// kept as the reference for the single-pass version.
    /// Removes hop-by-hop headers, including those named by `Connection`. With `upgrade`, the
    /// `Upgrade` header is kept and `Connection: upgrade` re-added. `TE: trailers` is kept
    /// (gRPC needs it).
    fn strip_reference(headers: &mut HeaderMap, upgrade: bool) {
        // Headers named in Connection (rare beyond keep-alive/close/upgrade).
        if headers.contains_key(header::CONNECTION) {
            let named: Vec<HeaderName> = headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|s| s.split(','))
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                .collect();
            for name in named {
                if !(upgrade && name == header::UPGRADE) && name != header::TE {
                    headers.remove(&name);
                }
            }
        }
        let te_trailers = headers.get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
        for name in &HOP_BY_HOP {
            if upgrade && name == header::UPGRADE {
                continue;
            }
            headers.remove(name);
        }
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }

    /// The single-pass stripping removes exactly what the reference did, over every subset of
    /// a header set that covers each hop-by-hop name, named tokens (mixed case, `te`,
    /// `upgrade`, `connection`, invalid ones), repeated values and `TE: trailers`.
    #[test]
    fn single_pass_matches_reference() {
        let candidates: [(&str, &str); 12] = [
            ("connection", "keep-alive, X-Private, te"),
            ("connection", "Upgrade, connection, bad name, "),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers, deflate"),
            ("trailer", "grpc-status"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-keep", "1"),
        ];
        for mask in 0u32..(1 << candidates.len()) {
            let mut h = HeaderMap::new();
            for (i, (name, value)) in candidates.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    h.append(
                        HeaderName::from_static(name),
                        HeaderValue::from_static(value),
                    );
                }
            }
            for upgrade in [false, true] {
                let mut want = h.clone();
                strip_reference(&mut want, upgrade);
                let mut got = h.clone();
                strip_hop_by_hop(&mut got, upgrade);
                assert_eq!(got, want, "mask {mask:#b} upgrade {upgrade}");
            }
        }
    }

    #[test]
    fn upgrade_keeps_upgrade_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(Version::HTTP_11, &h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let ips: [std::net::IpAddr; 6] = [
            [0, 0, 0, 0].into(),
            [10, 0, 0, 9].into(),
            [255, 255, 255, 255].into(),
            [1, 20, 100, 199].into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
            "fe80::1:2".parse().expect("ipv6"),
        ];
        for ip in ips {
            let mut out = bytes::BytesMut::new();
            push_ip(&mut out, ip);
            assert_eq!(&out[..], ip.to_string().as_bytes());
            for port in [0, 1, 80, 8080, 65535] {
                let addr = SocketAddr::new(ip, port);
                assert_eq!(
                    socket_authority(addr),
                    Authority::try_from(addr.to_string()).ok(),
                    "{addr}"
                );
            }
        }
        for n in [0, 7, 10, 99, 100, 255, 1000, 65535] {
            let mut out = bytes::BytesMut::new();
            push_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn forwarded_headers_append_and_keep() {
        let client = SocketAddr::from(([10, 0, 0, 9], 5555));
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_static("example.com");
        set_forwarded(&mut h, client, &host, false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");

        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        h.insert(
            &X_FORWARDED_HOST,
            HeaderValue::from_static("public.example"),
        );
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        set_forwarded(&mut h, client, &host, false);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_HOST], "public.example");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }
}
