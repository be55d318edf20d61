//! The request path, as named phases: `check → route → admit → forward → finish`.
//!
//! [`Proxy::handle`] runs them in order for one request (compat §1.3); each phase is a plain
//! function that either hands the next one what it needs or ends the request:
//!
//! 1. **check** ([`check`]): `CONNECT`, absolute-form targets, `Host` and framing
//!    validation → the request's host.
//! 2. **route** (`Proxy::route`): one `ArcSwap` load of the
//!    [`RouteTable`](crate::routing::RouteTable) (no match → 404), then the static-route
//!    decision ([`static_route`]): a matching static route answers, or is forwarded uncounted
//!    when the target is ready.
//! 3. **admit** ([`admit`]): the route's in-flight guard is taken (kept in the response body
//!    or the upgraded connection's splice task until the response has ended); without a ready
//!    endpoint, the placeholder, or a bounded hold on the target's ready channel
//!    ([`crate::coldstart`]), then the fallback or 504 → the pool to forward to and the
//!    request's deadline.
//! 4. **forward** (`Proxy::forward`, [`forward`]): hop-by-hop headers removed,
//!    `X-Forwarded-*` set, sent to a ready endpoint with connect retries and the
//!    response-header timeout, all within the request deadline → the upstream response, or
//!    the two halves of a `101 Switching Protocols` upgrade.
//! 5. **finish** (`Proxy::finish`): response hop-by-hop headers removed, the cold-start
//!    header, `Connection: close` on HTTP/1 while draining, the status recorded for the
//!    metrics; a 101 is spliced both ways; after the response headers the deadline ends the
//!    streaming body.
//!
//! Every response the interceptor makes itself comes from [`respond`], where failures map
//! to status codes in one place ([`ProxyError::status`]).

pub mod admit;
pub mod body;
pub mod check;
pub mod error;
pub mod forward;
pub mod framing;
pub mod respond;
pub mod retry;
pub mod server;
pub mod static_route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use keda_http_api::interceptor_route::{ResponseMode, StaticResponse};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::coldstart::ColdStart;
use crate::lifecycle::Lifecycle;
use crate::metrics::{MethodLabel, Metrics};
use crate::routing::{Route, RouteTableHandle};
use crate::telemetry::{RequestTrace, RequestTracer};
use admit::Admit;
use body::{Completion, ProxyBody};
pub use error::ProxyError;
use forward::Upstream;
use respond::BodySource;

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
    /// Idle upstream connections kept over all endpoints (0: no bound).
    pub max_idle_total: usize,
    /// Write a Combined Log Format line per request (`KEDA_HTTP_LOG_REQUESTS`).
    pub log_requests: bool,
    /// Set `X-KEDA-HTTP-Cold-Start` on forwarded responses
    /// (`KEDA_HTTP_ENABLE_COLD_START_HEADER`).
    pub cold_start_header: bool,
    /// Forward to a ready endpoint's address (`KEDA_HTTP_DIRECT_POD_ROUTING`, default); when
    /// false, to the Service address `<svc>.<ns>:<port>` once the target is ready.
    pub direct_pod_routing: bool,
    /// Connect retries (`KEDA_HTTP_RETRY_COUNT`) and their counter.
    pub retry: retry::Retry,
    /// `Upgrade` protocols forwarded (`KEDA_HTTP_ALLOWED_UPGRADES`); others are stripped.
    pub allowed_upgrades: forward::AllowedUpgrades,
    /// Backend TLS for requests that arrived on the TLS listener.
    pub upstream_tls: Option<Arc<crate::upstream_tls::UpstreamTls>>,
}

/// Response header telling whether the request waited for a cold start.
pub const COLD_START_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-keda-http-cold-start");

/// Shared state of the proxy listeners.
pub struct Proxy {
    routes: RouteTableHandle,
    cold: Arc<ColdStart>,
    bodies: Arc<dyn BodySource>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    settings: ProxySettings,
    lifecycle: Arc<Lifecycle>,
    /// Splice tasks of upgraded connections.
    upgraded: TaskTracker,
    /// Request traces, when tracing is on.
    tracer: Option<Arc<RequestTracer>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("cold", &self.cold)
            .field("settings", &self.settings)
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

/// A request bound to the proxy: the client's address and whether it arrived over TLS.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client socket address.
    pub addr: SocketAddr,
    /// Whether the listener is TLS.
    pub tls: bool,
}

/// What the route phase decided.
#[expect(
    clippy::large_enum_variant,
    reason = "lives on the stack for one call; boxing the answer would allocate per request"
)]
enum Routed {
    /// Count the request and forward it (after a cold start if needed).
    Counted(Arc<Route>),
    /// A `WhenUnavailable` static route whose target is ready: forward without counting.
    Uncounted(Arc<Route>),
    /// A static route answered.
    Answered(Response<ProxyBody>),
}

/// What the phases before `finish` produced.
enum Outcome {
    /// A response the interceptor made itself.
    Answered(Response<ProxyBody>),
    /// The upstream response, with what `finish` needs to complete it.
    Forwarded {
        response: Response<Incoming>,
        /// `Some(waited)` for a counted request to its own target; `None` otherwise.
        cold_start: Option<bool>,
        deadline: Option<Instant>,
    },
    /// `101 Switching Protocols`: send `response`, then splice the two upgraded connections.
    Upgraded {
        response: Response<ProxyBody>,
        client: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::OnUpgrade,
    },
}

impl Proxy {
    /// A proxy over `routes`, answering placeholders and static routes with `bodies`, and
    /// following `lifecycle` (draining, hard stop of upgraded connections).
    pub fn new(
        routes: RouteTableHandle,
        cold: Arc<ColdStart>,
        bodies: Arc<dyn BodySource>,
        metrics: Arc<Metrics>,
        settings: ProxySettings,
        lifecycle: Arc<Lifecycle>,
    ) -> Self {
        Self {
            upstream: Upstream::new(
                settings.connect_timeout,
                settings.max_idle_per_host,
                settings.max_idle_total,
                settings.direct_pod_routing,
                settings.retry.clone(),
                settings.upstream_tls.clone(),
            ),
            routes,
            cold,
            bodies,
            metrics,
            settings,
            lifecycle,
            upgraded: TaskTracker::new(),
            tracer: None,
        }
    }

    /// Traces every request with `tracer` (none: no span work at all).
    #[must_use]
    pub fn with_tracer(mut self, tracer: Option<Arc<RequestTracer>>) -> Self {
        self.tracer = tracer;
        self
    }

    /// Upgraded connections still open.
    pub fn upgraded(&self) -> &TaskTracker {
        &self.upgraded
    }

    /// Handles one request end to end: the phases in order.
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: Peer,
    ) -> Response<ProxyBody> {
        let trace = self
            .tracer
            .as_ref()
            .map(|t| t.start(&mut req, peer.addr, peer.tls));
        let mut completion =
            Completion::start(Arc::clone(&self.metrics), MethodLabel::of(req.method()));
        if self.settings.log_requests {
            completion.log_access(&req, peer.addr.ip());
        }
        let version = req.version();
        let outcome = self.phases(req, peer, &mut completion).await;
        let response = self.finish(outcome, version, completion);
        if let Some(trace) = trace {
            trace.end(response.status());
        }
        response
    }

    /// `check → route → admit → forward`.
    async fn phases(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
        completion: &mut Completion,
    ) -> Result<Outcome, ProxyError> {
        let mut host_value = check::check(&req)?;
        // `check` only accepts visible ASCII.
        let host = host_value
            .to_str()
            .map_err(|_| ProxyError::BadRequest("invalid Host"))?;
        let (route, counted) = match self.route(host, &req, completion)? {
            Routed::Counted(route) => (route, true),
            Routed::Uncounted(route) => (route, false),
            Routed::Answered(response) => return Ok(Outcome::Answered(response)),
        };
        let admitted = match self
            .admit(&route, counted, &mut req, &mut host_value, completion)
            .await?
        {
            Admit::Forward(admitted) => admitted,
            Admit::Answered(response) => return Ok(Outcome::Answered(response)),
        };
        self.forward(req, peer, &host_value, admitted).await
    }

    /// The route phase: one table load, then the static-route decision.
    fn route(
        &self,
        host: &str,
        req: &Request<Incoming>,
        completion: &mut Completion,
    ) -> Result<Routed, ProxyError> {
        let route = {
            let table = self.routes.load();
            let route = table.route(host, req.uri().path(), req.headers());
            Arc::clone(route.ok_or(ProxyError::NoRoute)?)
        };
        completion.set_route(&route.metrics);
        if self.tracer.is_some()
            && let Some(trace) = RequestTrace::of(req)
        {
            trace.set_route(&route);
        }
        // Static routes: answered, or forwarded uncounted when ready (compat §1.3 layer 5).
        let spec = &route.source.spec;
        let Some(matched) = static_route::static_route(spec, host, req.uri().path(), req.headers())
        else {
            return Ok(Routed::Counted(route));
        };
        if matched.response_mode.unwrap_or_default() == ResponseMode::Always
            || !route.pool.has_ready()
        {
            let response = self.answer(&matched.response, respond::Kind::Static, &route, req);
            return Ok(Routed::Answered(response));
        }
        Ok(Routed::Uncounted(route))
    }

    /// The forward phase: rewrite the request headers and send within the deadline.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
        host: &HeaderValue,
        admitted: admit::Admitted<'_>,
    ) -> Result<Outcome, ProxyError> {
        // Only allowed upgrades (WebSocket by default) are forwarded as upgrades; any other
        // (h2c above all) loses `Upgrade`, `Connection` and `HTTP2-Settings` and goes as a
        // plain request, so a backend can never switch the connection to it.
        let upgrade = forward::is_upgrade(req.version(), req.headers())
            && self.settings.allowed_upgrades.allows_all(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        if !upgrade {
            req.headers_mut().remove(forward::HTTP2_SETTINGS);
        }
        forward::strip_hop_by_hop(req.headers_mut(), upgrade);
        forward::set_forwarded(req.headers_mut(), peer.addr, host, peer.tls);
        let offered = client_upgrade
            .is_some()
            .then(|| req.headers().get(header::UPGRADE).cloned())
            .flatten();

        // Boxed: the upstream exchange is the largest state of the request, and each
        // enclosing future (here, `phases`, `handle`) would otherwise copy it when built.
        let send = Box::pin(self.upstream.send(
            admitted.pool,
            req,
            host,
            admitted.response_header_timeout,
            admitted.labels,
            peer.tls,
        ));
        let mut response = match admitted.deadline {
            None => send.await?,
            Some(deadline) => tokio::time::timeout_at(deadline, send)
                .await
                .map_err(|_| ProxyError::RequestTimeout)??,
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Outcome::Forwarded {
                response,
                cold_start: admitted.cold_start,
                deadline: admitted.deadline,
            });
        }
        let Some(client) = client_upgrade else {
            return Err(ProxyError::Upstream(
                "101 without an upgrade request".into(),
            ));
        };
        // The backend must switch to a protocol the client offered and we allow.
        let switched_to = response
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim();
        let offered_it = offered
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| {
                o.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case(switched_to))
            });
        if !offered_it || !self.settings.allowed_upgrades.allows(switched_to) {
            return Err(ProxyError::Upstream(
                format!("101 to a protocol not offered or not allowed: {switched_to:?}").into(),
            ));
        }
        let upstream = hyper::upgrade::on(&mut response);
        let (parts, _) = response.into_parts();
        Ok(Outcome::Upgraded {
            response: Response::from_parts(parts, ProxyBody::empty()),
            client,
            upstream,
        })
    }

    /// The finish phase: response header fixups, the status for the metrics, and the
    /// completion carried by the body (or the splice task of a 101).
    fn finish(
        &self,
        outcome: Result<Outcome, ProxyError>,
        version: Version,
        mut completion: Completion,
    ) -> Response<ProxyBody> {
        let mut response = match outcome {
            Ok(Outcome::Answered(response)) => response,
            Ok(Outcome::Forwarded {
                response,
                cold_start,
                deadline,
            }) => {
                completion.set_cold_start(cold_start == Some(true));
                self.upstream_response(response, cold_start, deadline)
            }
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
        if self.lifecycle.is_draining() && version < Version::HTTP_2 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.map(|body| body.with_completion(completion))
    }

    /// An upstream response as the client gets it: hop-by-hop headers removed, the
    /// cold-start header when enabled, and the body ended by the request deadline.
    fn upstream_response(
        &self,
        mut response: Response<Incoming>,
        cold_start: Option<bool>,
        deadline: Option<Instant>,
    ) -> Response<ProxyBody> {
        forward::strip_hop_by_hop(response.headers_mut(), false);
        if self.settings.cold_start_header
            && let Some(cold) = cold_start
        {
            response.headers_mut().insert(
                COLD_START_HEADER,
                HeaderValue::from_static(if cold { "true" } else { "false" }),
            );
        }
        response.map(|body| {
            let body = ProxyBody::upstream(body);
            match deadline {
                Some(deadline) => body.with_deadline(deadline),
                None => body,
            }
        })
    }

    /// A placeholder or static response for `req` on `route`.
    fn answer<B>(
        &self,
        response: &StaticResponse,
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
            &*self.bodies,
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
        let stop = self.lifecycle.hard_stop_signal();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `handle` returns, without calling it.
    fn future_size<F>(_: impl FnOnce(Arc<Proxy>, Request<Incoming>, Peer) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper moves the request future by value and every enclosing future copies its child
    /// when built, so each KiB of it costs instructions on every request. The h2c and TLS
    /// paths and the cold-start hold are boxed; inline they made it 20 KiB.
    #[test]
    fn request_future_stays_small() {
        let size = future_size(Proxy::handle);
        assert!(size <= 8 * 1024, "the request future grew to {size} bytes");
    }
}
