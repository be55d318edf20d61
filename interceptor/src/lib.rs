//! `keda-http-interceptor`: the HTTP data plane of keda-http.
//!
//! Owns the reverse proxy that routes by host, path prefix and headers, counts in-flight and
//! total requests per route, and forwards to ready endpoints; the admin port (`/queue`,
//! `/queue/watch`, `/readyz`, `/livez`, `/routes`) and the metrics port (`/metrics`); and
//! graceful shutdown. It does not decide replica counts (the scaler and KEDA do) and does not
//! write to Kubernetes: routes arrive through [`RouteTableHandle::install`] and endpoints
//! through an [`EndpointSource`], fed by the Kubernetes watches ([`watches`]) or by files
//! ([`files`]). A request whose target has no ready endpoint is held until one appears
//! ([`coldstart`]: hold bounds, placeholder, fallback, static routes).
//!
//! Modules, one concern each: [`config`] (settings), [`routing`] (the table), [`queue`]
//! (counters), [`endpoints`] (ready sets and load balancing), [`coldstart`] (holding,
//! placeholders, static responses), [`watches`] (kube-rs watchers and reflectors), [`proxy`]
//! (server, forwarding, protocols), [`tls`] (the TLS listener's certificates), [`admin`],
//! [`metrics`], [`files`] (static routes/endpoints), and the shutdown
//! sequence in [`Interceptor::run`].
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
pub mod metrics;
pub mod proxy;
pub mod queue;
pub mod routing;
pub mod tls;
pub mod watches;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use endpoints::EndpointSource;
pub use routing::RouteTableHandle;

use crate::admin::Admin;
use crate::endpoints::Endpoints;
use crate::metrics::Metrics;
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

/// Where the interceptor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving normally.
    Serving,
    /// Shutdown began: `/readyz` is 503 and HTTP/1 responses close their connection, but
    /// the listeners still accept (the shutdown delay).
    Draining,
    /// The proxy listener is closed; in-flight requests and upgraded connections finish.
    Closing,
    /// Everything has stopped.
    Stopped,
}

/// A bound interceptor, ready to [`run`](Self::run).
pub struct Interceptor {
    config: Config,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    tls_listener: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    addrs: BoundAddrs,
    routes: RouteTableHandle,
    queue: Arc<Queue>,
    proxy: Arc<Proxy>,
    registry: Arc<Registry>,
    phase: watch::Sender<Phase>,
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
        Self::bind_with(config, endpoints, Arc::new(coldstart::NoBodies)).await
    }

    /// [`bind`](Self::bind) with placeholder and static-response bodies from `bodies`
    /// (the ConfigMaps of [`watches::KubeWatches::bodies`]).
    pub async fn bind_with(
        config: Config,
        endpoints: Arc<dyn EndpointSource>,
        bodies: Arc<dyn coldstart::BodySource>,
    ) -> Result<Self, Error> {
        let ip = config.bind_address;
        let (tls_listener, tls_addr) = if config.proxy_tls_enabled {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&config)?);
            let (l, a) = server::bind(SocketAddr::new(ip, config.proxy_tls_port)).await?;
            (Some((l, acceptor)), Some(a))
        } else {
            (None, None)
        };
        let (proxy_listener, proxy) = server::bind(SocketAddr::new(ip, config.proxy_port)).await?;
        let (admin_listener, admin) = server::bind(SocketAddr::new(ip, config.admin_port)).await?;
        let (metrics_listener, metrics_addr) = if config.otel_prom_exporter_enabled {
            let (l, a) = server::bind(SocketAddr::new(ip, config.otel_prom_exporter_port)).await?;
            (Some(l), Some(a))
        } else {
            (None, None)
        };
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let queue = Arc::new(Queue::default());
        let routes = RouteTableHandle::new(Arc::clone(&queue), Arc::new(Endpoints::new(endpoints)));
        let cold = Arc::new(coldstart::ColdStart::new(
            config.effective_readiness_timeout(),
            config.cold_start_max_pending_requests,
            bodies,
            &mut registry,
        ));
        let proxy_state = Arc::new(Proxy::new(
            routes.clone(),
            cold,
            metrics,
            ProxySettings {
                request_timeout: config.request_timeout,
                response_header_timeout: config.effective_response_header_timeout(),
                connect_timeout: config.connect_timeout,
                max_idle_per_host: config.max_idle_conns_per_host,
                log_requests: config.log_requests,
                cold_start_header: config.enable_cold_start_header,
                direct_pod_routing: config.direct_pod_routing,
            },
        ));
        Ok(Self {
            config,
            proxy_listener,
            admin_listener,
            metrics_listener,
            tls_listener,
            addrs: BoundAddrs {
                proxy,
                admin,
                metrics: metrics_addr,
                tls: tls_addr,
            },
            routes,
            queue,
            proxy: proxy_state,
            registry: Arc::new(registry),
            phase: watch::channel(Phase::Serving).0,
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

    /// The counters behind `/queue`.
    pub fn queue(&self) -> Arc<Queue> {
        Arc::clone(&self.queue)
    }

    /// The life-cycle phase and its changes.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Serves until `shutdown` completes, then: `/readyz` 503 and `Connection: close` for
    /// `KEDA_HTTP_SHUTDOWN_DELAY` while still serving; close the proxy listener; drain
    /// in-flight requests and upgraded connections within `KEDA_HTTP_DRAIN_TIMEOUT` (0: no
    /// bound; past it the rest are dropped); then stop the admin and metrics listeners.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Self {
            config,
            proxy_listener,
            admin_listener,
            metrics_listener,
            tls_listener,
            routes,
            queue,
            proxy,
            registry,
            phase,
            ..
        } = self;
        let limits = Limits {
            header_read_timeout: config.read_header_timeout,
            max_header_bytes: config.max_header_bytes,
        };
        let builder = server::builder(limits);

        let stop_proxy = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let stop_admin = CancellationToken::new();

        let handler_proxy = Arc::clone(&proxy);
        let proxy_task = tokio::spawn(server::serve(
            proxy_listener,
            builder.clone(),
            None,
            move |req, addr| Arc::clone(&handler_proxy).handle(req, Peer { addr, tls: false }),
            stop_proxy.clone(),
            hard_stop.clone(),
        ));
        let tls_task = tls_listener.map(|(listener, acceptor)| {
            let handler_proxy = Arc::clone(&proxy);
            tokio::spawn(server::serve(
                listener,
                builder.clone(),
                Some(acceptor),
                move |req, addr| Arc::clone(&handler_proxy).handle(req, Peer { addr, tls: true }),
                stop_proxy.clone(),
                hard_stop.clone(),
            ))
        });

        let admin = Admin {
            routes,
            queue,
            proxy: Arc::clone(&proxy),
        };
        let admin_task = tokio::spawn(server::serve(
            admin_listener,
            builder.clone(),
            None,
            move |req, _| admin.clone().handle(req),
            stop_admin.clone(),
            stop_admin.clone(),
        ));
        let metrics_task = metrics_listener.map(|listener| {
            tokio::spawn(server::serve(
                listener,
                builder.clone(),
                None,
                move |req, _| {
                    let response = admin::metrics(&registry, &req);
                    async move { response }
                },
                stop_admin.clone(),
                stop_admin.clone(),
            ))
        });

        shutdown.await;
        tracing::info!(delay = ?config.shutdown_delay, "shutdown: not ready, still serving");
        proxy.start_draining();
        phase.send_replace(Phase::Draining);
        tokio::time::sleep(config.shutdown_delay).await;

        tracing::info!(timeout = ?config.drain_timeout, "shutdown: closing the proxy listeners, draining");
        phase.send_replace(Phase::Closing);
        stop_proxy.cancel();
        let drained = async {
            let _ = proxy_task.await;
            if let Some(task) = tls_task {
                let _ = task.await;
            }
            proxy.upgraded().close();
            proxy.upgraded().wait().await;
        };
        tokio::pin!(drained);
        if config.drain_timeout.is_zero() {
            drained.await;
        } else if tokio::time::timeout(config.drain_timeout, drained.as_mut())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: drain timeout passed, dropping the remaining connections");
            hard_stop.cancel();
            proxy.stop_upgraded();
            drained.await;
        }

        stop_admin.cancel();
        let _ = admin_task.await;
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        phase.send_replace(Phase::Stopped);
        tracing::info!("shutdown: done");
        Ok(())
    }
}
