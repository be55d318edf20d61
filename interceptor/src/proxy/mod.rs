//! The request path: validate → route → count → forward → stream back.
//!
//! [`Proxy::handle`] is the whole chain for one request, in the order of reference §1.3:
//!
//! 1. **validate**: `CONNECT` → 405; an absolute-form HTTP/1 request target → 404 (never an
//!    open proxy); a missing (HTTP/1.1), repeated or malformed `Host` → 400; both
//!    `Content-Length` and `Transfer-Encoding` → 400 (detected by [`framing`], since hyper
//!    drops the Content-Length of such a request). hyper itself answers malformed request
//!    lines and headers (400), oversized header sections (431) and slow headers (the
//!    header-read timeout closes the connection).
//! 2. **route**: one `ArcSwap` load of the [`RouteTable`](crate::routing::RouteTable); no
//!    match → 404.
//! 3. **static routes, then count**: a matching static route answers (or forwards when the
//!    target is ready) without counting; otherwise the route's in-flight guard is taken and
//!    kept in the response body (or the upgraded connection's splice task) until the response
//!    has ended.
//! 4. **cold start** ([`crate::coldstart`]): without a ready endpoint, the placeholder, or a
//!    bounded hold on the target's ready channel, then the fallback or 504.
//! 5. **forward** ([`forward`]): pick a ready endpoint, rewrite headers, send with connect
//!    retries and the response-header timeout, all within the request deadline (504 before
//!    the response headers; after them the deadline ends the streaming body).
//! 6. **respond**: hop-by-hop headers removed; `Connection: close` on HTTP/1 while draining;
//!    `101 Switching Protocols` spliced both ways.
//!
//! Failures map to status codes in one place, [`ProxyError::status`].

pub mod body;
pub mod error;
pub mod forward;
pub mod framing;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::coldstart::{self, Admission, ColdStart, respond};
use crate::endpoints::PortLookup;
use crate::metrics::{MethodLabel, Metrics};
use crate::routing::{Route, RouteTableHandle};
use body::{Completion, ProxyBody};
pub use error::ProxyError;
use forward::Upstream;
use keda_http_api::interceptor_route::ResponseMode;

/// Settings of the request path.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Default total deadline until the response headers (zero: none).
    pub request_timeout: Duration,
    /// Default response-header timeout (zero: none).
    pub response_header_timeout: Duration,
    /// Timeout of one connect attempt.
    pub connect_timeout: Duration,
    /// Idle upstream connections kept per endpoint.
    pub max_idle_per_host: usize,
    /// Write a Combined Log Format line per request (`KEDA_HTTP_LOG_REQUESTS`).
    pub log_requests: bool,
    /// Set `X-KEDA-HTTP-Cold-Start` on forwarded responses
    /// (`KEDA_HTTP_ENABLE_COLD_START_HEADER`).
    pub cold_start_header: bool,
    /// Forward to a ready endpoint's address (`KEDA_HTTP_DIRECT_POD_ROUTING`, default); when
    /// false, to the Service address `<svc>.<ns>:<port>` once the target is ready.
    pub direct_pod_routing: bool,
}

/// Response header telling whether the request waited for a cold start.
pub const COLD_START_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-keda-http-cold-start");

/// Shared state of the proxy listeners.
#[derive(Debug)]
pub struct Proxy {
    routes: RouteTableHandle,
    cold: Arc<ColdStart>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    settings: ProxySettings,
    draining: AtomicBool,
    /// Upgraded (spliced) connections, drained at shutdown.
    upgraded: TaskTracker,
    /// Cancelled when the drain deadline passes: ends spliced connections.
    hard_stop: CancellationToken,
}

/// A request bound to the proxy: the client's address and whether it arrived over TLS.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client socket address.
    pub addr: SocketAddr,
    /// Whether the listener is TLS.
    pub tls: bool,
}

impl Proxy {
    /// A proxy over `routes`.
    pub fn new(
        routes: RouteTableHandle,
        cold: Arc<ColdStart>,
        metrics: Arc<Metrics>,
        settings: ProxySettings,
    ) -> Self {
        Self {
            upstream: Upstream::new(settings.connect_timeout, settings.max_idle_per_host),
            routes,
            cold,
            metrics,
            settings,
            draining: AtomicBool::new(false),
            upgraded: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
        }
    }

    /// From now on HTTP/1 responses carry `Connection: close`.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Cold-start state (held requests, bounds).
    pub fn cold_start(&self) -> &Arc<ColdStart> {
        &self.cold
    }

    /// Upgraded connections still open.
    pub fn upgraded(&self) -> &TaskTracker {
        &self.upgraded
    }

    /// Ends every upgraded connection now.
    pub fn stop_upgraded(&self) {
        self.upgraded.close();
        self.hard_stop.cancel();
    }

    /// Handles one request end to end.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Response<ProxyBody> {
        let mut completion =
            Completion::start(Arc::clone(&self.metrics), MethodLabel::of(req.method()));
        if self.settings.log_requests {
            completion.log_access(&req, peer.addr.ip());
        }
        let version = req.version();
        let mut response = match self.route_and_forward(req, peer, &mut completion).await {
            Ok(Outcome::Response(response)) => response,
            Ok(Outcome::Upgraded {
                response,
                client,
                upstream,
            }) => {
                completion.set_code(StatusCode::SWITCHING_PROTOCOLS.as_u16());
                self.splice(client, upstream, completion);
                return response;
            }
            Err(error) => {
                tracing::debug!(%error, "request answered by the interceptor");
                error.into_response()
            }
        };
        completion.set_code(response.status().as_u16());
        if self.is_draining() && version < Version::HTTP_2 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.map(|body| body.with_completion(completion))
    }

    async fn route_and_forward(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
        completion: &mut Completion,
    ) -> Result<Outcome, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        let version = req.version();
        if version < Version::HTTP_2 && req.uri().scheme().is_some() {
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
        let host_value = request_host(&req)?;
        // request_host only accepts visible ASCII.
        let host = host_value
            .to_str()
            .map_err(|_| ProxyError::BadRequest("invalid Host"))?;
        let route = {
            let table = self.routes.load();
            match table.route(host, req.uri().path(), req.headers()) {
                Some(route) => Arc::clone(route),
                None => return Err(ProxyError::NoRoute),
            }
        };
        completion.set_route(&route.metrics);

        // Static routes: answered, or forwarded when ready, without counting (§1.3 layer 5).
        let mut counted = true;
        if let Some(static_route) =
            respond::static_route(&route.source.spec, host, req.uri().path(), req.headers())
        {
            let mode = static_route.response_mode.unwrap_or_default();
            if mode == ResponseMode::Always || !route.pool.has_ready() {
                return Ok(Outcome::Response(self.answer(
                    &static_route.response,
                    respond::Kind::Static,
                    &route,
                    &req,
                )));
            }
            counted = false;
        }
        if counted {
            completion.count(route.counters.enter());
        }

        let timeouts = route.source.spec.timeouts.as_ref();
        let request_timeout = timeouts
            .and_then(|t| t.request)
            .map_or(self.settings.request_timeout, |d| d.as_duration());
        let response_header_timeout = timeouts
            .and_then(|t| t.response_header)
            .map_or(self.settings.response_header_timeout, |d| d.as_duration());
        let deadline =
            (!request_timeout.is_zero()).then(|| tokio::time::Instant::now() + request_timeout);

        // Cold start (§1.3 layers 7 and 8): placeholder, hold until ready, fallback.
        let mut pool = &route.pool;
        let mut cold_start: Option<bool> = None;
        if counted {
            if pool.current().service_port == PortLookup::Missing {
                return Err(ProxyError::UnknownPort(route.target.to_string()));
            }
            if pool.has_ready() {
                cold_start = Some(false);
            } else {
                match self.cold.admit(&route) {
                    Admission::Placeholder => {
                        let placeholder = route
                            .source
                            .spec
                            .cold_start
                            .as_ref()
                            .and_then(|c| c.placeholder.as_ref());
                        let Some(placeholder) = placeholder else {
                            return Err(ProxyError::HoldQueueFull);
                        };
                        return Ok(Outcome::Response(self.answer(
                            &placeholder.response,
                            respond::Kind::Placeholder,
                            &route,
                            &req,
                        )));
                    }
                    Admission::Reject => return Err(ProxyError::HoldQueueFull),
                    Admission::Hold(hold) => {
                        let readiness = self.cold.readiness_timeout(&route.source.spec);
                        let until = coldstart::earliest(
                            deadline,
                            (!readiness.is_zero()).then(|| tokio::time::Instant::now() + readiness),
                        );
                        let ready = coldstart::wait_ready(pool, until).await;
                        drop(hold);
                        if ready {
                            cold_start = Some(true);
                        } else if let Some(fallback) = &route.fallback {
                            if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                                return Err(ProxyError::RequestTimeout);
                            }
                            if fallback.current().service_port == PortLookup::Missing {
                                return Err(ProxyError::UnknownPort(fallback.target().to_string()));
                            }
                            pool = fallback;
                        } else {
                            return Err(ProxyError::ColdStartTimeout);
                        }
                    }
                }
            }
        }

        let upgrade = forward::is_upgrade(version, req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        forward::strip_hop_by_hop(req.headers_mut(), upgrade);
        forward::set_forwarded(req.headers_mut(), peer.addr, &host_value, peer.tls);

        let send = async {
            if self.settings.direct_pod_routing {
                self.upstream
                    .send(pool, req, &host_value, response_header_timeout)
                    .await
            } else {
                let authority = service_authority(pool)?;
                self.upstream
                    .send_to_service(
                        &authority,
                        pool.app_protocol(),
                        req,
                        &host_value,
                        response_header_timeout,
                    )
                    .await
            }
        };
        let mut response = match deadline {
            None => send.await?,
            Some(deadline) => tokio::time::timeout_at(deadline, send)
                .await
                .map_err(|_| ProxyError::RequestTimeout)??,
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client) = client_upgrade else {
                return Err(ProxyError::Upstream(
                    "101 without an upgrade request".into(),
                ));
            };
            let upstream = hyper::upgrade::on(&mut response);
            let (parts, _) = response.into_parts();
            return Ok(Outcome::Upgraded {
                response: Response::from_parts(parts, ProxyBody::empty()),
                client,
                upstream,
            });
        }
        forward::strip_hop_by_hop(response.headers_mut(), false);
        if self.settings.cold_start_header
            && let Some(cold) = cold_start
        {
            response.headers_mut().insert(
                COLD_START_HEADER,
                HeaderValue::from_static(if cold { "true" } else { "false" }),
            );
        }
        Ok(Outcome::Response(response.map(|body| {
            let body = ProxyBody::upstream(body);
            match deadline {
                Some(deadline) => body.with_deadline(deadline),
                None => body,
            }
        })))
    }

    /// A placeholder or static response for `req` on `route`.
    fn answer<B>(
        &self,
        response: &keda_http_api::interceptor_route::StaticResponse,
        kind: respond::Kind,
        route: &Route,
        req: &Request<B>,
    ) -> Response<ProxyBody> {
        respond::respond(
            response,
            kind,
            &route.source.namespace,
            req.uri().path(),
            req.headers().get(header::ACCEPT),
            self.cold.bodies(),
        )
    }

    /// Copies bytes both ways between the upgraded client and upstream connections; the
    /// request stays counted until either side closes (or the drain deadline passes).
    fn splice(
        &self,
        client: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::OnUpgrade,
        completion: Completion,
    ) {
        let stop = self.hard_stop.clone();
        self.upgraded.spawn(async move {
            let _completion = completion;
            let (client, upstream) = match tokio::join!(client, upstream) {
                (Ok(c), Ok(u)) => (c, u),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::debug!(%error, "upgrade failed");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            tokio::select! {
                result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "upgraded connection ended with an error");
                    }
                }
                () = stop.cancelled() => {}
            }
        });
    }
}

/// What forwarding produced.
enum Outcome {
    /// A response to stream back.
    Response(Response<ProxyBody>),
    /// `101 Switching Protocols`: send `response`, then splice the two upgraded connections.
    Upgraded {
        response: Response<ProxyBody>,
        client: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::OnUpgrade,
    },
}

/// `<service>.<namespace>:<port>` of a pool's target: the Service port the target resolved
/// to, else the target's own port number.
fn service_authority(pool: &crate::endpoints::Pool) -> Result<String, ProxyError> {
    let target = pool.target();
    let port = match (pool.current().service_port, &target.port) {
        (PortLookup::Port(port), _) => i32::from(port),
        (_, crate::endpoints::TargetPort::Number(port)) => *port,
        (_, crate::endpoints::TargetPort::Name(_)) => {
            return Err(ProxyError::UnknownPort(target.to_string()));
        }
    };
    Ok(format!("{}.{}:{port}", target.service, target.namespace))
}

/// The request's host: `Host` for HTTP/1 (required for 1.1, at most one), else the URI
/// authority (h2 `:authority`), else `Host`. Only RFC 3986 authority characters are allowed.
fn request_host(req: &Request<Incoming>) -> Result<HeaderValue, ProxyError> {
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
