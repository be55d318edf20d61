//! `keda-http-operator`: turns HTTPScaledObjects into KEDA ScaledObjects and reports honest
//! `Ready` conditions.
//!
//! Owns:
//! - the HTTPScaledObject controller ([`httpso_controller`]): one same-named
//!   `keda.sh/v1alpha1` ScaledObject per HTTPScaledObject, built by [`scaled_object`] as the
//!   official operator builds it, written with server-side apply; the skip and orphan
//!   annotations; the `httpscaledobject.http.keda.sh` finalizer; status ([`status`]);
//! - the InterceptorRoute controller ([`route_controller`]): `Ready` with
//!   `observedGeneration`, `False` when the target Service is missing or another route claims
//!   the same host + path + headers (keys from `keda_http_api::routing`);
//! - one active replica through a Lease ([`leader`]);
//! - `/healthz`, `/readyz` and `/metrics` ([`probes`], [`metrics`]), the latter optionally
//!   over TLS and behind TokenReview/SubjectAccessReview ([`metrics_access`]);
//! - its flags and `KEDA_HTTP_OPERATOR_*` settings ([`config`]).
//!
//! It does not route traffic, count requests or talk to KEDA; the interceptor and the scaler
//! do. The CRD types come from `keda-http-api`.
//!
//! [`Operator`] is the in-process entry point: [`Operator::bind`] opens the listeners,
//! [`Operator::run`] runs until the shutdown future completes (or, with leader election,
//! until the Lease is lost). The binary is a thin wrapper around it.

pub mod config;
pub mod httpso_controller;
pub mod leader;
pub mod metrics;
pub mod metrics_access;
pub mod probes;
pub mod route_controller;
pub mod scaled_object;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use config::{Args, Config, ConfigError, LeaderTimings};
pub use metrics::Metrics;

use crate::leader::{LeaderElector, LeaderError};
use crate::probes::{Endpoints, Health};

/// How long in-flight reconciles may take to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The metrics TLS certificate could not be loaded or made.
    #[error(transparent)]
    MetricsTls(#[from] metrics_access::TlsError),
    /// This replica lost the Lease; it stopped reconciling and should restart as a candidate.
    #[error("leader election lost: {0}")]
    LeadershipLost(#[from] LeaderError),
}

/// A bound, not yet running operator.
pub struct Operator {
    config: Config,
    client: Client,
    metrics: Metrics,
    health: Health,
    probe_listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    metrics_tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("config", &self.config)
            .field("probe_addr", &self.probe_addr())
            .field("metrics_addr", &self.metrics_addr())
            .finish_non_exhaustive()
    }
}

impl Operator {
    /// Opens the probe and metrics listeners configured in `config`.
    pub async fn bind(config: Config, client: Client) -> Result<Self, Error> {
        let listen = |addr: Option<SocketAddr>| async move {
            match addr {
                None => Ok(None),
                Some(addr) => TcpListener::bind(addr)
                    .await
                    .map(Some)
                    .map_err(|source| Error::Bind { addr, source }),
            }
        };
        let metrics_tls = match config.metrics_secure && config.metrics_addr.is_some() {
            true => Some(TlsAcceptor::from(metrics_access::tls_config(
                config.metrics_cert_dir.as_deref(),
            )?)),
            false => None,
        };
        let probe_listener = listen(config.probe_addr).await?;
        let metrics_listener = listen(config.metrics_addr).await?;
        Ok(Self {
            config,
            client,
            metrics: Metrics::new(),
            health: Health::new(),
            probe_listener,
            metrics_listener,
            metrics_tls,
        })
    }

    /// The bound `/healthz` + `/readyz` address.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The bound `/metrics` address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The metrics this operator records (shared with the running instance).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Serves the endpoints and runs the controllers (while holding the Lease when leader
    /// election is on) until `shutdown` completes. On shutdown, reconciles in flight get a
    /// short grace period and a held Lease is released. Dropping the returned future stops
    /// everything at once, as a killed process would (the Lease is then left to expire).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Self {
            config,
            client,
            metrics,
            health,
            probe_listener,
            metrics_listener,
            metrics_tls,
        } = self;
        let servers_stop = CancellationToken::new();
        let mut servers = JoinSet::new();
        if let Some(l) = probe_listener {
            servers.spawn(probes::serve(
                l,
                Endpoints::Probes(health.clone()),
                None,
                servers_stop.clone(),
            ));
        }
        if let Some(l) = metrics_listener {
            let auth = config
                .metrics_auth
                .then(|| Arc::new(metrics_access::Authorizer::new(client.clone())));
            let endpoints = Endpoints::Metrics {
                metrics: metrics.clone(),
                auth,
            };
            servers.spawn(probes::serve(
                l,
                endpoints,
                metrics_tls,
                servers_stop.clone(),
            ));
        }
        let result = if config.leader_elect {
            run_elected(&config, &client, &metrics, shutdown).await
        } else {
            run_controllers_until(&config, &client, &metrics, shutdown).await;
            Ok(())
        };
        health.set_not_ready();
        servers_stop.cancel();
        while servers.join_next().await.is_some() {}
        result
    }
}

/// Binds and runs; see [`Operator::run`].
pub async fn run(
    config: Config,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Operator::bind(config, client).await?.run(shutdown).await
}

async fn run_elected(
    config: &Config,
    client: &Client,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let lease_namespace = if config.namespace.is_empty() {
        client.default_namespace().to_owned()
    } else {
        config.namespace.clone()
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease_namespace);
    let mut elector = LeaderElector::new(
        leases,
        config::LEASE_NAME,
        config.identity.clone(),
        config.leader_timings,
    );
    metrics.set_leader(config::LEASE_NAME, false);
    tokio::pin!(shutdown);
    tracing::info!(
        lease = config::LEASE_NAME,
        namespace = %lease_namespace,
        identity = %elector.identity(),
        "waiting to become leader"
    );
    tokio::select! {
        () = elector.acquire() => {}
        () = &mut shutdown => {
            // An attempt cancelled mid-flight may have taken the Lease at the server.
            if let Err(error) = elector.release().await {
                tracing::warn!(%error, "could not release lease");
            }
            return Ok(());
        }
    }
    metrics.set_leader(config::LEASE_NAME, true);
    let stop = CancellationToken::new();
    let controllers = run_controllers(config, client, metrics, stop.clone());
    tokio::pin!(controllers);
    let outcome = tokio::select! {
        lost = elector.hold() => Err(lost),
        () = &mut shutdown => Ok(()),
        () = &mut controllers => Ok(()),
    };
    match outcome {
        Err(lost) => {
            // Stop reconciling at once: another replica may already be leading.
            metrics.set_leader(config::LEASE_NAME, false);
            tracing::error!(error = %lost, "lost leadership; stopping controllers");
            Err(Error::LeadershipLost(lost))
        }
        Ok(()) => {
            stop.cancel();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers).await;
            if let Err(error) = elector.release().await {
                tracing::warn!(%error, "could not release lease");
            }
            metrics.set_leader(config::LEASE_NAME, false);
            Ok(())
        }
    }
}

async fn run_controllers_until(
    config: &Config,
    client: &Client,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let stop = CancellationToken::new();
    let controllers = run_controllers(config, client, metrics, stop.clone());
    tokio::pin!(controllers);
    tokio::select! {
        () = shutdown => {
            stop.cancel();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers).await;
        }
        () = &mut controllers => {}
    }
}

async fn run_controllers(
    config: &Config,
    client: &Client,
    metrics: &Metrics,
    stop: CancellationToken,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "keda-http-operator".to_owned(),
            instance: Some(config.identity.clone()),
        },
    );
    let ctx = Arc::new(httpso_controller::Context::new(
        client.clone(),
        config.scaler_address(),
        metrics.clone(),
        recorder.clone(),
    ));
    let watch_namespace = config.watch_namespace.as_deref();
    tracing::info!(scaler_address = %config.scaler_address(), ?watch_namespace, "starting controllers");
    futures::join!(
        httpso_controller::run(ctx, watch_namespace, stop.clone()),
        route_controller::run(
            client.clone(),
            metrics.clone(),
            recorder,
            watch_namespace,
            stop
        ),
    );
}

/// Drives a controller until it ends. When `shutdown` fires first, waits for its graceful end
/// only if its main store has synced: kube's applier waits for that first list before it
/// reconciles anything, and shutdown stops the watch that would deliver it, so a controller
/// stopped that early would otherwise never finish. Nothing can be in flight before the
/// first list, so dropping it then loses nothing.
pub(crate) async fn drive_controller<K>(
    controller: impl Future<Output = ()>,
    store: kube::runtime::reflector::Store<K>,
    shutdown: CancellationToken,
) where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt as _;
    tokio::pin!(controller);
    tokio::select! {
        () = &mut controller => {}
        () = shutdown.cancelled() => {
            if matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))) {
                controller.await;
            }
        }
    }
}

/// Marks each object a checked watch skipped (`reports`) until `shutdown`: `Ready=False` with
/// reason `InvalidSpec` and a one-sentence message through the status subresource (with
/// `observedGeneration`), and a Warning Event. An invalid object being deleted that still
/// carries `finalizer` loses it instead, so its deletion is not held up by an object no
/// controller can reconcile (garbage collection removes what it owns).
pub(crate) async fn mark_invalid_objects<K>(
    client: Client,
    recorder: Recorder,
    mut reports: tokio::sync::mpsc::UnboundedReceiver<keda_http_runtime::watch::Invalid>,
    finalizer: Option<&'static str>,
    shutdown: CancellationToken,
) where
    K: kube::Resource<DynamicType = ()>,
{
    let resource = kube::api::ApiResource::erase::<K>(&());
    loop {
        let invalid = tokio::select! {
            () = shutdown.cancelled() => return,
            invalid = reports.recv() => match invalid {
                Some(invalid) => invalid,
                None => return,
            },
        };
        if let Err(error) = mark_invalid(&client, &recorder, &resource, &invalid, finalizer).await {
            tracing::warn!(
                kind = %invalid.kind,
                namespace = invalid.namespace.as_deref().unwrap_or_default(),
                name = %invalid.name,
                error = %httpso_controller::api_error_text(&error),
                "could not mark the invalid object"
            );
        }
    }
}

async fn mark_invalid(
    client: &Client,
    recorder: &Recorder,
    resource: &kube::api::ApiResource,
    invalid: &keda_http_runtime::watch::Invalid,
    finalizer: Option<&'static str>,
) -> Result<(), kube::Error> {
    use kube::Resource as _;
    use kube::api::{DynamicObject, Patch, PatchParams};

    let Some(namespace) = invalid.namespace.as_deref() else {
        return Ok(());
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let meta = &invalid.object.metadata;
    let finalizers = meta.finalizers.as_deref().unwrap_or_default();
    if let Some(ours) = finalizer.filter(|f| finalizers.iter().any(|x| x == f))
        && meta.deletion_timestamp.is_some()
    {
        let kept: Vec<&String> = finalizers.iter().filter(|f| *f != ours).collect();
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": meta.resource_version, "finalizers": kept}
        });
        api.patch(
            &invalid.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        tracing::info!(kind = %invalid.kind, namespace, name = %invalid.name, "removed the finalizer of an invalid object being deleted");
        return Ok(());
    }
    let previous: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> = invalid
        .object
        .data
        .pointer("/status/conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let Some(conditions) = status::invalid_spec_conditions(
        &previous,
        &invalid.reason,
        meta.generation,
        jiff::Timestamp::now(),
    ) else {
        return Ok(());
    };
    api.patch_status(
        &invalid.name,
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "status": { "conditions": conditions } })),
    )
    .await?;
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: status::REASON_INVALID_SPEC.to_owned(),
        note: Some(
            status::invalid_spec_message(&invalid.reason)
                .chars()
                .take(1000)
                .collect(),
        ),
        action: "Validate".to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder
        .publish(&event, &invalid.object.object_ref(resource))
        .await
    {
        tracing::debug!(%error, "could not publish event");
    }
    Ok(())
}
