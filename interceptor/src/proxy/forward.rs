//! Forwarding to a ready endpoint: request/response header rewriting, the upstream
//! connections (HTTP/1.1 from the idle pool of [`crate::upstream`], h2c through one
//! multiplexed connection per endpoint), connect retries and timeouts. Requests that arrived
//! over TLS go to the backend over TLS ([`crate::upstream_tls`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::body::{ClientFault, UpstreamBody};
use super::error::{BoxError, ProxyError};
use super::retry::Retry;
use crate::endpoints::{AppProtocol, Pool, PortLookup, TargetPort};
use crate::metrics::RouteLabels;
use crate::telemetry::{AttemptSpan, Endpoint, RequestTrace};
use crate::upstream::{self, DialError, IdleLimits, KeyRef};
use crate::upstream_tls::{
    self, SendError, TlsConnectError, TlsKey, TlsPool, TlsSender, UpstreamTls,
};

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

/// `HTTP2-Settings`, sent with an `Upgrade: h2c` request; removed with a refused upgrade.
pub const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The upgrade allow-list (`KEDA_HTTP_ALLOWED_UPGRADES`): lower-case protocol names.
#[derive(Debug, Clone)]
pub struct AllowedUpgrades(Vec<Box<str>>);

impl AllowedUpgrades {
    /// From a comma-separated list; blanks are ignored, names compared case-insensitively.
    pub fn parse(list: &str) -> Self {
        Self(
            list.split(',')
                .map(|t| t.trim().to_ascii_lowercase().into_boxed_str())
                .filter(|t| !t.is_empty())
                .collect(),
        )
    }

    /// Whether `protocol` (`name` or `name/version`) is allowed.
    pub fn allows(&self, protocol: &str) -> bool {
        let name = protocol.split('/').next().unwrap_or("").trim();
        !name.is_empty() && self.0.iter().any(|a| name.eq_ignore_ascii_case(a))
    }

    /// Whether every protocol an `Upgrade` header offers is allowed (and there is one).
    pub fn allows_all(&self, headers: &HeaderMap) -> bool {
        let mut any = false;
        for value in headers.get_all(header::UPGRADE) {
            let Ok(value) = value.to_str() else {
                return false;
            };
            for protocol in value.split(',') {
                if !self.allows(protocol) {
                    return false;
                }
                any = true;
            }
        }
        any
    }
}

impl Default for AllowedUpgrades {
    /// WebSocket only.
    fn default() -> Self {
        Self::parse("websocket")
    }
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
    /// HTTP/1.1 connections, and the idle pool TLS HTTP/1.1 shares.
    http1: upstream::Http1<UpstreamBody>,
    h2: Mutex<HashMap<SocketAddr, http2::SendRequest<UpstreamBody>>>,
    connect_timeout: Duration,
    /// `KEDA_HTTP_DIRECT_POD_ROUTING`: to a ready endpoint (true) or the Service address.
    direct_pod_routing: bool,
    /// Connect retries.
    retry: Retry,
    /// Backend TLS for requests that arrived over TLS (none without a TLS listener).
    tls: Option<TlsPool<UpstreamBody>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("connect_timeout", &self.connect_timeout)
            .field("direct_pod_routing", &self.direct_pod_routing)
            .finish_non_exhaustive()
    }
}

/// Why one connect attempt failed.
enum AttemptError {
    /// Nothing was sent; another endpoint may be tried with the same request.
    Connect { timeout: bool, error: BoxError },
    /// The exchange failed after connecting.
    Upstream(BoxError),
}

/// The connect retries of one request: one log line when its attempts end, if any retried.
struct Tally<'a> {
    retry: &'a Retry,
    labels: &'a RouteLabels,
    pool: &'a Pool,
    retries: u32,
    /// How the attempts ended: `ok`, `failed`, or `cancelled` (the deadline or the client).
    outcome: &'static str,
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        if self.retries > 0 {
            tracing::info!(
                target = %self.pool.target(),
                retries = self.retries,
                max = self.retry.max_retries(),
                outcome = self.outcome,
                "upstream connect retried"
            );
        }
    }
}

/// Where one attempt goes.
#[derive(Debug, Clone, Copy)]
enum Address<'a> {
    /// A ready endpoint of the target.
    Endpoint(SocketAddr),
    /// The target's Service address, `<svc>.<ns>:<port>`.
    Service(&'a str),
}

impl<'a> Address<'a> {
    /// The same address as a trace attribute.
    fn endpoint(self) -> Endpoint<'a> {
        match self {
            Self::Endpoint(addr) => Endpoint::Addr(addr),
            Self::Service(authority) => Endpoint::Authority(authority),
        }
    }
}

/// The connection one attempt sends on.
enum Conn<'a> {
    /// An HTTP/1.1 connection (idle one reused, or new) to an endpoint or the Service address.
    Http1(KeyRef<'a>, http1::SendRequest<UpstreamBody>),
    /// The multiplexed h2c connection to an address.
    H2c(SocketAddr, http2::SendRequest<UpstreamBody>),
    /// A TLS connection (HTTP/1.1 or h2 by ALPN) to an address, verified for a name.
    Tls(TlsKey, TlsSender<UpstreamBody>),
}

/// What every attempt of one request shares.
struct Head<'a> {
    method: Method,
    path: PathAndQuery,
    /// The client's authority.
    host: &'a HeaderValue,
    response_header_timeout: Duration,
    /// For a request that arrived over TLS: the name the backend's certificate is verified
    /// against (SNI), `<svc>.<ns>`.
    tls_name: Option<ServerName<'static>>,
    /// The request's trace, when traced.
    trace: Option<&'a RequestTrace>,
}

impl Head<'_> {
    /// The one upstream request builder: method, URI for `address` (h2c: the client's
    /// authority as `:authority`), version, and `Host` (kept, or set to the client's
    /// authority for HTTP/1.1; dropped for h2c).
    fn request(
        &self,
        headers: HeaderMap,
        body: UpstreamBody,
        conn: &Conn<'_>,
    ) -> Request<UpstreamBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.headers_mut() = headers;
        match conn {
            Conn::H2c(addr, _) => {
                *req.uri_mut() = authority_uri(self.host.to_str().unwrap_or(""), &self.path)
                    .unwrap_or_else(|| endpoint_uri(*addr, &self.path));
                *req.version_mut() = Version::HTTP_2;
                req.headers_mut().remove(header::HOST);
                return req;
            }
            Conn::Tls(key, sender) if sender.is_h2() => {
                let uri = authority_uri(self.host.to_str().unwrap_or(""), &self.path)
                    .unwrap_or_else(|| endpoint_uri(key.addr, &self.path));
                let mut parts = uri.into_parts();
                parts.scheme = Some(Scheme::HTTPS);
                *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
                *req.version_mut() = Version::HTTP_2;
                req.headers_mut().remove(header::HOST);
                return req;
            }
            // HTTP/1.1 on an own connection: origin-form target.
            Conn::Http1(..) | Conn::Tls(..) => *req.uri_mut() = Uri::from(self.path.clone()),
        }
        *req.version_mut() = Version::HTTP_11;
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, self.host.clone());
        }
        req
    }
}

/// Records how an attempt ended on its span.
fn attempt_outcome(
    span: Option<&AttemptSpan<'_>>,
    response: &Result<Response<Incoming>, AttemptError>,
) {
    match (span, response) {
        (None, _) => {}
        (Some(span), Ok(response)) => span.status(response.status()),
        (Some(span), Err(AttemptError::Connect { error, .. } | AttemptError::Upstream(error))) => {
            span.fail(error);
        }
    }
}

/// Where the next attempt goes: the Service address, or the next ready endpoint not yet
/// tried (starting over once every ready endpoint has been tried).
fn next_address<'a>(
    pool: &Pool,
    service: Option<&'a str>,
    tried: &mut Vec<SocketAddr>,
) -> Result<Address<'a>, ProxyError> {
    if let Some(authority) = service {
        return Ok(Address::Service(authority));
    }
    let no_endpoint = || ProxyError::NoReadyEndpoint(pool.target().to_string());
    let addr = match pool.pick(tried) {
        Some(addr) => addr,
        None if tried.is_empty() => return Err(no_endpoint()),
        None => {
            tried.clear();
            pool.pick(tried).ok_or_else(no_endpoint)?
        }
    };
    tried.push(addr);
    Ok(Address::Endpoint(addr))
}

/// The first address the cluster's DNS gives for `authority`.
async fn resolve(authority: &str) -> Result<SocketAddr, AttemptError> {
    let connect = |error: BoxError| AttemptError::Connect {
        timeout: false,
        error,
    };
    match tokio::net::lookup_host(authority).await {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| connect(format!("{authority} resolved to no address").into())),
        Err(error) => Err(connect(Box::new(error))),
    }
}

/// `<service>.<namespace>:<port>` of a pool's target: the Service port the target resolved
/// to, else the target's own port number.
fn service_authority(pool: &Pool) -> Result<String, ProxyError> {
    let target = pool.target();
    let port = match (pool.current().service_port, &target.port) {
        (PortLookup::Port(port), _) => i32::from(port),
        (_, TargetPort::Number(port)) => *port,
        (_, TargetPort::Name(_)) => {
            return Err(ProxyError::UnknownPort(target.to_string()));
        }
    };
    Ok(format!("{}.{}:{port}", target.service, target.namespace))
}

impl Upstream {
    /// Pools keeping at most `max_idle_per_host` idle HTTP/1.1 connections per endpoint and
    /// `max_idle_total` over all endpoints, plain and TLS together (0: no total bound),
    /// forwarding to endpoints (`direct_pod_routing`) or to the Service address,
    /// re-dialling per `retry`; over TLS with `tls` for requests that arrived over TLS.
    pub fn new(
        connect_timeout: Duration,
        max_idle_per_host: usize,
        max_idle_total: usize,
        direct_pod_routing: bool,
        retry: Retry,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Self {
        let http1 = upstream::Http1::new(
            connect_timeout,
            IdleLimits {
                per_host: max_idle_per_host,
                total: max_idle_total,
                timeout: upstream::IDLE_TIMEOUT,
            },
        );
        let tls = tls.map(|tls| TlsPool::new(tls, connect_timeout, http1.idle().clone()));
        Self {
            http1,
            h2: Mutex::new(HashMap::new()),
            connect_timeout,
            direct_pod_routing,
            retry,
            tls,
        }
    }

    /// Idle HTTP/1.1 connections to backends, plain and TLS.
    pub fn idle_connections(&self) -> usize {
        self.http1.idle().idle_count()
    }

    /// Sends `request` to the target of `pool`: to a ready endpoint (direct pod routing), or
    /// to the Service address `<svc>.<ns>:<port>`, where the cluster's DNS and kube-proxy
    /// choose the pod. When connecting fails before anything was sent, the request is dialled
    /// again after a jittered backoff, on the next ready endpoint, up to the retry bound
    /// ([`super::retry`]; the caller's deadline bounds the whole). `host` is the client's
    /// authority, preserved as `Host` (HTTP/1.1) or `:authority` (h2). The response-header
    /// timeout (zero: none) bounds each attempt. Retries are counted on the route `labels`
    /// and logged once per request. With `tls` (the request arrived over TLS) the backend
    /// connection is TLS too.
    pub async fn send(
        &self,
        pool: &Pool,
        request: Request<Incoming>,
        host: &HeaderValue,
        response_header_timeout: Duration,
        labels: &RouteLabels,
        tls: bool,
    ) -> Result<Response<Incoming>, ProxyError> {
        let tls_name = match &self.tls {
            Some(_) if tls => {
                let target = pool.target();
                let name = upstream_tls::server_name(&target.service, &target.namespace)
                    .map_err(|e| ProxyError::Connect(Box::new(e)))?;
                Some(name)
            }
            _ => None,
        };
        let (parts, body) = request.into_parts();
        // Extensions (e.g. hyper's upgrade handle) stay with the client request.
        let head = Head {
            method: parts.method,
            path: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            host,
            response_header_timeout,
            tls_name,
            trace: parts.extensions.get::<RequestTrace>(),
        };
        // Counted as they happen and logged once when the request's attempts end, also when
        // the request deadline cuts them short (this future is then dropped).
        let mut tally = Tally {
            retry: &self.retry,
            labels,
            pool,
            retries: 0,
            outcome: "cancelled",
        };
        let result = self
            .send_with_retries(pool, &head, parts.headers, body, &mut tally)
            .await;
        tally.outcome = if result.is_ok() { "ok" } else { "failed" };
        result
    }

    /// The attempts of one request; `retries` counts the re-dials made.
    async fn send_with_retries(
        &self,
        pool: &Pool,
        head: &Head<'_>,
        headers: HeaderMap,
        body: Incoming,
        tally: &mut Tally<'_>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let service = if self.direct_pod_routing {
            None
        } else {
            Some(service_authority(pool)?)
        };
        // Endpoints tried since the last time every ready endpoint had been tried.
        let mut tried: Vec<SocketAddr> = Vec::new();
        let client_fault = ClientFault::default();
        loop {
            let address = next_address(pool, service.as_deref(), &mut tried)?;
            let may_retry = tally.retries < self.retry.max_retries();
            let span = head
                .trace
                .map(|t| t.attempt(address.endpoint(), tally.retries as usize));
            let failure = match self
                .connect(pool.app_protocol(), address, head.tls_name.as_ref())
                .await
            {
                Err(AttemptError::Connect { timeout, error }) => {
                    if let Some(span) = &span {
                        span.fail(&error);
                    }
                    (timeout, error)
                }
                Err(AttemptError::Upstream(e)) => return Err(upstream_error(e)),
                Ok(conn) => {
                    // Connected: the body goes out on this connection for good.
                    let mut attempt_headers = headers;
                    if let Some(span) = &span {
                        span.inject(&mut attempt_headers);
                    }
                    let upstream_body = UpstreamBody::once(body, client_fault.clone());
                    let req = head.request(attempt_headers, upstream_body, &conn);
                    let response = self.send_on(conn, req, head.response_header_timeout).await;
                    attempt_outcome(span.as_ref(), &response);
                    return match response {
                        Ok(response) => Ok(response),
                        Err(_) if client_fault.is_set() => Err(ProxyError::ClientBody),
                        Err(AttemptError::Upstream(e)) => Err(upstream_error(e)),
                        // A reused connection had closed and a new one failed: the body went
                        // with the request, so this attempt is the last.
                        Err(AttemptError::Connect { timeout, error }) => {
                            Err(connect_error(timeout, error))
                        }
                    };
                }
            };
            let (timeout, error) = failure;
            tracing::debug!(?address, %error, timeout, "upstream connect failed");
            if !may_retry {
                return Err(connect_error(timeout, error));
            }
            tally.retries += 1;
            self.retry.record(tally.labels, 1);
            tokio::time::sleep(super::retry::backoff(tally.retries)).await;
        }
    }

    /// The connection for one attempt, made before any of the request is committed to it (a
    /// failure here leaves the request to the next attempt): for HTTP/1.1 an idle pooled
    /// connection to the endpoint or the Service address, else a new one; for h2c the
    /// multiplexed connection to the endpoint, or to the Service address as resolved by the
    /// cluster's DNS; with `tls_name` a TLS connection verified for that name (h2 only for an
    /// h2c port).
    async fn connect<'a>(
        &self,
        protocol: AppProtocol,
        address: Address<'a>,
        tls_name: Option<&ServerName<'static>>,
    ) -> Result<Conn<'a>, AttemptError> {
        if let (Some(name), Some(tls)) = (tls_name, &self.tls) {
            let addr = match address {
                Address::Endpoint(addr) => addr,
                Address::Service(authority) => resolve(authority).await?,
            };
            let key = TlsKey {
                addr,
                name: name.clone(),
                h2_only: protocol == AppProtocol::H2c,
            };
            // Boxed, as are the h2c and TLS sends below: their futures are KiB large and
            // would otherwise sit in every request's future (HTTP/1.1 needs neither).
            let sender = Box::pin(tls.sender(&key))
                .await
                .map_err(tls_connect_error)?;
            return Ok(Conn::Tls(key, sender));
        }
        let addr = match (protocol, address) {
            (AppProtocol::Http1, address) => {
                let key = match address {
                    Address::Endpoint(addr) => KeyRef::Addr(addr),
                    Address::Service(authority) => KeyRef::Authority(authority),
                };
                let sender = self.http1.sender(key).await.map_err(dial_error)?;
                return Ok(Conn::Http1(key, sender));
            }
            (AppProtocol::H2c, Address::Endpoint(addr)) => addr,
            (AppProtocol::H2c, Address::Service(authority)) => resolve(authority).await?,
        };
        Ok(Conn::H2c(addr, Box::pin(self.h2_sender(addr)).await?))
    }

    /// The one send path: `req` on `conn`, within the response-header timeout.
    async fn send_on(
        &self,
        conn: Conn<'_>,
        req: Request<UpstreamBody>,
        response_header_timeout: Duration,
    ) -> Result<Response<Incoming>, AttemptError> {
        match conn {
            Conn::Http1(key, sender) => {
                with_timeout(response_header_timeout, self.send_http1(key, sender, req)).await
            }
            Conn::H2c(addr, sender) => {
                let send = Box::pin(self.send_h2(addr, sender, req));
                with_timeout(response_header_timeout, send).await
            }
            Conn::Tls(key, sender) => {
                let send = Box::pin(self.send_tls(key, sender, req));
                with_timeout(response_header_timeout, send).await
            }
        }
    }

    async fn send_tls(
        &self,
        key: TlsKey,
        sender: TlsSender<UpstreamBody>,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, AttemptError> {
        let Some(tls) = &self.tls else {
            return Err(AttemptError::Upstream(
                "backend TLS is not configured".into(),
            ));
        };
        tls.send(&key, sender, req).await.map_err(|e| match e {
            SendError::Connect(e) => tls_connect_error(e),
            SendError::Upstream(e) => AttemptError::Upstream(Box::new(e)),
        })
    }

    async fn send_http1(
        &self,
        key: KeyRef<'_>,
        sender: http1::SendRequest<UpstreamBody>,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, AttemptError> {
        self.http1
            .send(key, sender, req)
            .await
            .map_err(|e| match e {
                upstream::SendError::Dial(e) => dial_error(e),
                upstream::SendError::Upstream(e) => AttemptError::Upstream(Box::new(e)),
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

fn upstream_error(error: BoxError) -> ProxyError {
    if error.is::<ResponseHeaderTimeout>() {
        ProxyError::ResponseHeaderTimeout
    } else {
        ProxyError::Upstream(error)
    }
}

fn tls_connect_error(error: TlsConnectError) -> AttemptError {
    AttemptError::Connect {
        timeout: matches!(error, TlsConnectError::Dial(DialError::Timeout)),
        error: Box::new(error),
    }
}

fn dial_error(error: DialError) -> AttemptError {
    AttemptError::Connect {
        timeout: matches!(error, DialError::Timeout),
        error: Box::new(error),
    }
}

fn connect_error(timeout: bool, error: BoxError) -> ProxyError {
    if timeout {
        ProxyError::ConnectTimeout
    } else {
        ProxyError::Connect(error)
    }
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
    fn only_listed_upgrades_are_allowed() {
        let allowed = AllowedUpgrades::default();
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::UPGRADE, HeaderValue::from_static(v));
            h
        };
        assert!(allowed.allows_all(&with("websocket")));
        assert!(allowed.allows_all(&with("WebSocket")));
        assert!(!allowed.allows_all(&with("h2c")));
        assert!(!allowed.allows_all(&with("websocket, h2c")));
        assert!(!allowed.allows_all(&HeaderMap::new()));
        let more = AllowedUpgrades::parse("websocket, h2c ,");
        assert!(more.allows_all(&with("h2c")));
        assert!(more.allows("H2C/1"));
        assert!(!AllowedUpgrades::parse("").allows("websocket"));
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
