//! `keda-http-interceptor`: the HTTP data plane of keda-http.
//!
//! Owns the reverse proxy that routes by host, path prefix and headers, counts in-flight and
//! total requests per route, and forwards to ready endpoints; the admin port (`/queue`,
//! `/queue/watch`, `/readyz`, `/livez`, `/routes`) and the metrics port (`/metrics`); and
//! graceful shutdown. It does not decide replica counts (the scaler and KEDA do) and does not
//! write to Kubernetes: routes arrive through [`RouteTableHandle::install`] and endpoints
//! through an [`EndpointSource`], fed by the Kubernetes watches ([`watches`]) or by files
//! ([`files`]). A request whose target has no ready endpoint is held until one appears
//! ([`coldstart`]: hold bounds and wake-up).
//!
//! Modules, one concern each: [`config`] (settings), [`routing`] (the table), [`queue`]
//! (counters), [`endpoints`] (ready sets and load balancing), [`coldstart`] (holding and
//! waking cold requests), [`watches`] (kube-rs watchers and reflectors, one spec per watched
//! kind), [`proxy`] (the request path as named phases `check → route → admit → forward →
//! finish`, every self-made response in [`proxy::respond`], forwarding, protocols, the accept
//! loops), [`tls`] (the TLS listener's certificates), [`upstream`] (pooled HTTP/1.1
//! connections to backends), [`upstream_tls`] (TLS to backends),
//! [`admin`], [`metrics`], [`files`]
//! (static routes/endpoints), and [`lifecycle`] (the phase and stop signals that
//! [`Interceptor::run`] drives through the shutdown sequence).
//!
//! Imports between these modules run one way (no cycle): `proxy` uses `coldstart`,
//! `routing`, `endpoints`, `queue`, `metrics` and `lifecycle`; `coldstart` uses none of
//! `proxy`.
//!
//! Tests start the whole interceptor in-process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), keda_http_interceptor::Error> {
//! use std::sync::Arc;
//! use keda_http_interceptor::{Config, Interceptor, endpoints::StaticEndpoints};
//! let endpoints = Arc::new(StaticEndpoints::default());
//! let interceptor = Interceptor::bind(Config::for_tests(), endpoints.clone()).await?;
//! let addrs = interceptor.addrs();
//! interceptor.routes().install(vec![], vec![]).await;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(interceptor.run(async { let _ = stopped.await; }));
//! // ... send requests to addrs.proxy, read addrs.admin ...
//! let _ = stop.send(());
//! task.await.expect("joined")?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod coldstart;
pub mod config;
pub mod endpoints;
pub mod files;
pub mod lifecycle;
pub mod metrics;
pub mod proxy;
pub mod queue;
pub mod routing;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod upstream_tls;
pub mod watches;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use config::Config;
pub use endpoints::EndpointSource;
pub use lifecycle::Phase;
pub use routing::RouteTableHandle;

use crate::admin::Admin;
use crate::endpoints::Endpoints;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::proxy::respond::{BodySource, NoBodies};
use crate::proxy::server::{self, Limits};
use crate::proxy::{Peer, Proxy, ProxySettings};
use crate::queue::Queue;

/// Errors that stop the interceptor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] server::ServerError),
    /// The TLS listener could not be configured.
    #[error("TLS listener: {0}")]
    Tls(#[from] tls::TlsError),
    /// TLS to the backends could not be configured.
    #[error("backend TLS: {0}")]
    BackendTls(#[source] tls::TlsError),
    /// The OpenTelemetry exporters could not be set up.
    #[error("OpenTelemetry: {0}")]
    Telemetry(#[from] keda_http_runtime::otel::OtelError),
}

/// The addresses actually bound (useful with port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    /// Plain proxy listener.
    pub proxy: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Metrics listener, if enabled.
    pub metrics: Option<SocketAddr>,
    /// TLS proxy listener, if enabled.
    pub tls: Option<SocketAddr>,
}

/// The bound listeners.
struct Listeners {
    proxy: TcpListener,
    admin: TcpListener,
    metrics: Option<TcpListener>,
    tls: Option<(TcpListener, TlsAcceptor)>,
}

/// A bound interceptor, ready to [`run`](Self::run).
pub struct Interceptor {
    config: Config,
    listeners: Listeners,
    addrs: BoundAddrs,
    routes: RouteTableHandle,
    queue: Arc<Queue>,
    proxy: Arc<Proxy>,
    registry: Arc<Registry>,
    lifecycle: Arc<Lifecycle>,
    invalid_objects: keda_http_runtime::watch::InvalidObjects,
    telemetry: telemetry::Telemetry,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    /// Binds every listener of `config` (port 0 picks a free port) with endpoints from
    /// `endpoints`. No routing table is installed yet: `/readyz` answers 503 until
    /// [`RouteTableHandle::install`] has run once.
    pub async fn bind(config: Config, endpoints: Arc<dyn EndpointSource>) -> Result<Self, Error> {
        Self::bind_with(config, endpoints, Arc::new(NoBodies)).await
    }

    /// [`bind`](Self::bind) with placeholder and static-response bodies from `bodies`
    /// (the ConfigMaps of [`watches::KubeWatches::bodies`]).
    pub async fn bind_with(
        config: Config,
        endpoints: Arc<dyn EndpointSource>,
        bodies: Arc<dyn BodySource>,
    ) -> Result<Self, Error> {
        let (listeners, addrs) = Listeners::bind(&config).await?;
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let invalid_objects = keda_http_runtime::watch::InvalidObjects::register(&mut registry);
        let queue = Arc::new(Queue::default());
        let routes = RouteTableHandle::new(Arc::clone(&queue), Arc::new(Endpoints::new(endpoints)));
        let cold = Arc::new(coldstart::ColdStart::new(
            config.effective_readiness_timeout(),
            config.cold_start_max_pending_requests,
            &mut registry,
        ));
        let lifecycle = Arc::new(Lifecycle::new());
        let tracer = telemetry::start_tracing(&config, &mut registry)?;
        let settings = ProxySettings {
            request_timeout: config.request_timeout,
            response_header_timeout: config.effective_response_header_timeout(),
            connect_timeout: config.connect_timeout,
            max_idle_per_host: config.max_idle_conns_per_host,
            max_idle_total: config.max_idle_conns,
            log_requests: config.log_requests,
            cold_start_header: config.enable_cold_start_header,
            direct_pod_routing: config.direct_pod_routing,
            retry: proxy::retry::Retry::new(config.retry_count, &mut registry),
            allowed_upgrades: proxy::forward::AllowedUpgrades::parse(&config.allowed_upgrades),
            upstream_tls: match config.proxy_tls_enabled {
                true => Some(Arc::new(
                    upstream_tls::UpstreamTls::new(&config).map_err(Error::BackendTls)?,
                )),
                false => None,
            },
        };
        let proxy = Arc::new(
            Proxy::new(
                routes.clone(),
                cold,
                bodies,
                metrics,
                settings,
                Arc::clone(&lifecycle),
            )
            .with_tracer(tracer.clone()),
        );
        let registry = Arc::new(registry);
        let telemetry = telemetry::Telemetry {
            metrics: telemetry::metrics_push(&config, &registry)?,
            tracing: tracer,
        };
        Ok(Self {
            config,
            listeners,
            addrs,
            routes,
            queue,
            proxy,
            registry,
            lifecycle,
            invalid_objects,
            telemetry,
        })
    }

    /// The bound addresses.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// The routing-table seam: install the full set of routes whenever it changes.
    pub fn routes(&self) -> RouteTableHandle {
        self.routes.clone()
    }

    /// The counter of skipped (invalid) InterceptorRoutes and HTTPScaledObjects, exposed as
    /// `keda_http_invalid_objects_total{kind}` ([`watches::KubeWatches::count_invalid_in`]).
    pub fn invalid_objects(&self) -> keda_http_runtime::watch::InvalidObjects {
        self.invalid_objects.clone()
    }

    /// The counters behind `/queue`.
    pub fn queue(&self) -> Arc<Queue> {
        Arc::clone(&self.queue)
    }

    /// The life-cycle phase and its changes.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.lifecycle.subscribe()
    }

    /// The life cycle (the Kubernetes watches record routing-table refreshes in it).
    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        Arc::clone(&self.lifecycle)
    }

    /// Serves until `shutdown` completes, then: `/readyz` 503 and `Connection: close` for
    /// `KEDA_HTTP_SHUTDOWN_DELAY` while still serving (requests arriving then are still held
    /// and served when their target becomes ready); close the proxy listener; drain in-flight
    /// requests and upgraded connections within `KEDA_HTTP_DRAIN_TIMEOUT` (0: no bound; at
    /// the deadline, requests still held for a cold start are answered 503 with `Retry-After`
    /// and `Connection: close`, then the rest are dropped); then stop the admin and metrics
    /// listeners.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let telemetry = std::mem::take(&mut self.telemetry).start();
        let running = self.serve();
        shutdown.await;
        running.not_ready().await;
        let running = running.drain().await;
        running.stop().await;
        telemetry.stop().await;
        Ok(())
    }

    /// Starts the accept loops: proxy (plain, TLS) on the life cycle's close and hard-stop
    /// signals, admin and metrics on its admin signal.
    fn serve(self) -> Running {
        let Self {
            config,
            listeners,
            routes,
            queue,
            proxy,
            registry,
            lifecycle,
            ..
        } = self;
        let builder = server::builder(Limits {
            header_read_timeout: config.read_header_timeout,
            max_header_bytes: config.max_header_bytes,
        });
        let serve_proxy = |listener, tls: Option<TlsAcceptor>| {
            let proxy = Arc::clone(&proxy);
            let peer_tls = tls.is_some();
            tokio::spawn(server::serve(
                listener,
                builder.clone(),
                tls,
                // Boxed: hyper's dispatcher moves the service future by value, and the
                // request future is several KiB; a boxed one moves as a pointer (callgrind:
                // 101k → 81k instructions per proxied request).
                move |req, addr| {
                    Box::pin(Arc::clone(&proxy).handle(
                        req,
                        Peer {
                            addr,
                            tls: peer_tls,
                        },
                    ))
                },
                lifecycle.close_signal(),
                lifecycle.hard_stop_signal(),
            ))
        };
        let mut proxy_tasks = vec![serve_proxy(listeners.proxy, None)];
        if let Some((listener, acceptor)) = listeners.tls {
            proxy_tasks.push(serve_proxy(listener, Some(acceptor)));
        }

        let admin = Admin {
            routes,
            queue,
            lifecycle: Arc::clone(&lifecycle),
        };
        let admin_tasks = serve_admin(
            &builder,
            listeners.admin,
            listeners.metrics,
            admin,
            registry,
        );
        Running {
            shutdown_delay: config.shutdown_delay,
            drain_timeout: config.drain_timeout,
            lifecycle,
            proxy,
            proxy_tasks,
            admin_tasks,
        }
    }
}

/// Starts the admin listener and, if bound, the metrics listener; both stop on the life
/// cycle's admin signal.
fn serve_admin(
    builder: &server::Builder,
    admin_listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    admin: Admin,
    registry: Arc<Registry>,
) -> Vec<JoinHandle<()>> {
    let stop = admin.lifecycle.admin_signal();
    let mut tasks = vec![tokio::spawn(server::serve(
        admin_listener,
        builder.clone(),
        None,
        move |req, _| admin.clone().handle(req),
        stop.clone(),
        stop.clone(),
    ))];
    if let Some(listener) = metrics_listener {
        tasks.push(tokio::spawn(server::serve(
            listener,
            builder.clone(),
            None,
            move |req, _| {
                let response = admin::metrics(&registry, &req);
                async move { response }
            },
            stop.clone(),
            stop,
        )));
    }
    tasks
}

impl Listeners {
    /// Binds the listeners `config` enables.
    async fn bind(config: &Config) -> Result<(Self, BoundAddrs), Error> {
        let ip = config.bind_address;
        let (tls, tls_addr) = if config.proxy_tls_enabled {
            let acceptor = TlsAcceptor::from(tls::server_config(config)?);
            let (l, a) = server::bind(SocketAddr::new(ip, config.proxy_tls_port)).await?;
            (Some((l, acceptor)), Some(a))
        } else {
            (None, None)
        };
        let (proxy, proxy_addr) = server::bind(SocketAddr::new(ip, config.proxy_port)).await?;
        let (admin, admin_addr) = server::bind(SocketAddr::new(ip, config.admin_port)).await?;
        let (metrics, metrics_addr) = if config.otel_prom_exporter_enabled {
            let (l, a) = server::bind(SocketAddr::new(ip, config.otel_prom_exporter_port)).await?;
            (Some(l), Some(a))
        } else {
            (None, None)
        };
        let addrs = BoundAddrs {
            proxy: proxy_addr,
            admin: admin_addr,
            metrics: metrics_addr,
            tls: tls_addr,
        };
        Ok((
            Self {
                proxy,
                admin,
                metrics,
                tls,
            },
            addrs,
        ))
    }
}

/// Time past the drain timeout for the 503 answers of requests still held for a cold start
/// to be written before the remaining connections are dropped.
const HELD_ANSWER_GRACE: Duration = Duration::from_millis(250);

/// A serving interceptor: its accept loops and what shutting them down needs.
struct Running {
    shutdown_delay: Duration,
    drain_timeout: Duration,
    lifecycle: Arc<Lifecycle>,
    proxy: Arc<Proxy>,
    proxy_tasks: Vec<JoinHandle<()>>,
    admin_tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Not ready, still serving, for the shutdown delay.
    async fn not_ready(&self) {
        tracing::info!(delay = ?self.shutdown_delay, "shutdown: not ready, still serving");
        self.lifecycle.start_draining();
        tokio::time::sleep(self.shutdown_delay).await;
    }

    /// Closes the proxy listeners and waits for in-flight requests and upgraded connections,
    /// dropping what remains past the drain timeout (zero: no bound).
    async fn drain(mut self) -> Self {
        tracing::info!(timeout = ?self.drain_timeout, "shutdown: closing the proxy listeners, draining");
        self.lifecycle.close();
        let tasks = std::mem::take(&mut self.proxy_tasks);
        let upgraded = self.proxy.upgraded().clone();
        let drained = async move {
            for task in tasks {
                let _ = task.await;
            }
            upgraded.close();
            upgraded.wait().await;
        };
        tokio::pin!(drained);
        if self.drain_timeout.is_zero() {
            drained.await;
        } else if tokio::time::timeout(self.drain_timeout, drained.as_mut())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: drain timeout passed, dropping the remaining connections");
            // Held cold-start requests are answered 503 first; their responses get a short
            // grace to be written before the connections are dropped.
            self.lifecycle.release_held();
            if tokio::time::timeout(HELD_ANSWER_GRACE, drained.as_mut())
                .await
                .is_err()
            {
                self.lifecycle.stop_now();
                self.proxy.upgraded().close();
                drained.await;
            }
        }
        self
    }

    /// Stops the admin and metrics listeners; the interceptor has stopped.
    async fn stop(self) {
        self.lifecycle.close_admin();
        for task in self.admin_tasks {
            let _ = task.await;
        }
        self.lifecycle.stopped();
        tracing::info!("shutdown: done");
    }
}
