//! `kube-standin`: an in-memory Kubernetes API server for tests and the demo: plain HTTP on
//! 127.0.0.1 with a bearer token, speaking enough of the Kubernetes API conventions that the
//! real kube-rs client, watchers, reflectors and `Controller`s work against it unchanged.
//!
//! It is the bottom layer of the test stack: it imports no keda-http crate and knows nothing
//! of the add-on, so every crate (the programs' integration tests, the end-to-end harness) can
//! use it without a dependency cycle. It owns the API side only; the controllers a cluster
//! runs (Deployments, kubelet, EndpointSlices, KEDA) are played elsewhere, by the end-to-end
//! crate's workload simulator and KEDA stand-in.
//!
//! Start it in-process with [`LocalApiServer::start`] and connect with
//! [`LocalApiServer::client`] (or point a program at [`LocalApiServer::kubeconfig_path`]), or
//! run the `local-apiserver` binary.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kube_standin::LocalApiServer;
//! use k8s_openapi::api::core::v1::ConfigMap;
//!
//! let server = LocalApiServer::start().await?;
//! let client = server.client().await?; // a real kube::Client
//! let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
//! // Programs run as processes get `KUBECONFIG=<server.kubeconfig_path()>`.
//! let _kubeconfig = server.kubeconfig_path();
//! // Resilience: end every watch, fail the next 3 requests, force relists with 410.
//! server.faults().close_watches();
//! server.faults().fail_next(3);
//! server.faults().compact_history();
//! # let _ = cms;
//! # Ok(()) }
//! ```
//!
//! # Modules
//! [`kinds`] (served resources), [`store`] (objects, resourceVersions, event history, list
//! snapshots, finalizers and garbage collection), `validation` and `defaults` (what the
//! server checks and fills in), `schema` (CRD OpenAPI schemas and CEL rules), [`crds`]
//! (third-party CRDs such as KEDA's ScaledObject), `scale` (the Scale view), [`watch`] (watch streams),
//! [`selectors`], [`patch`], [`discovery`], [`http`] (routing and encoding), [`error`]
//! (`Status` errors), [`faults`], [`manifests`] (seeding from YAML) and
//! [`write`](mod@write) (what a write request asks for: subresource, patch body, options).
//!
//! # What it implements
//! - Objects of any registered kind ([`kinds`]) stored untyped as JSON ([`store`]): create,
//!   get, list (label/field selectors, `limit`/`continue`, all namespaces), update, patch,
//!   delete, delete-collection, `status` and `scale` subresources, discovery documents.
//! - Server-set metadata: a global, monotonically increasing `resourceVersion`; `uid`,
//!   `creationTimestamp`, `generation` (bumped when anything outside `metadata`/`status`
//!   changes), `generateName`; no-op writes keep the `resourceVersion` and send no event;
//!   `status` sent on create is dropped for kinds with a status subresource.
//! - 404 / 409 AlreadyExists / 409 Conflict (stale `resourceVersion`, failed delete
//!   preconditions) / 410 Gone / 422 Invalid / 401 with Kubernetes `Status` bodies.
//! - Watches ([`watch`]) with `resourceVersion`, `allowWatchBookmarks`, `timeoutSeconds`,
//!   `sendInitialEvents` (streaming lists, as kube-rs `watcher::Config::streaming_lists` uses
//!   them) and a bounded event history; a resourceVersion older than the history gets an
//!   ERROR event with code 410.
//! - Finalizers (`deletionTimestamp` set, object kept until the finalizers are gone) and
//!   garbage collection by `ownerReferences`.
//! - Metadata-only reads and watches (`Accept: ...;as=PartialObjectMetadata`), as
//!   `Api<PartialObjectMeta<K>>` uses them.
//! - Seeding from YAML manifests ([`manifests`], [`LocalApiServer::apply_manifests`]).
//! - Fault injection ([`faults`]).
//! - **What a real server enforces, by default:** label key and value syntax on every
//!   object; EndpointSlice addresses valid for the `addressType` and never loopback or
//!   link-local (`ServerConfig::allow_loopback_endpoints` relaxes only the loopback rule);
//!   a CustomResourceDefinition's patterns and CEL rules compile; custom resources of a
//!   registered CRD match its OpenAPI v3 schema and `x-kubernetes-validations` rules (422
//!   `Invalid` with one cause per field). Unknown fields follow `fieldValidation`: `Strict`
//!   refuses them (400, `strict decoding error: unknown field "spec.x"`), the default (`Warn`,
//!   what kube-rs sends) and `Ignore` prune them, as a real server does. Kinds served without
//!   a CRD object (the built-in registry's `http.keda.sh` and `keda.sh` kinds) have no schema
//!   until their CRD is applied.
//! - The namespaces `default`, `kube-system`, `kube-public` and `kube-node-lease` exist at
//!   start; creating a namespaced object in a namespace that does not exist is a 404.
//!
//! # What is deliberately simplified or missing
//! - **Server-side apply** is an upsert-merge: the applied configuration is merged into the
//!   live object (maps recursively; lists by merge key for built-in groups, replaced whole for
//!   custom resources; see [`patch`]). `fieldManager` is recorded in `managedFields`
//!   (with empty `fieldsV1`); as on a real server, apply requires `fieldManager` (422) and
//!   `apiVersion`/`kind` in the body (400). There is no field ownership: fields a manager stops
//!   applying are not removed, there are no apply conflicts, and `force` has no effect.
//! - **Strategic merge patch** is approximated for built-in kinds by a table of merge keys
//!   (listed in [`patch`]); other lists are replaced; only the `$patch` directive is honoured.
//!   Custom resources reject it with 415, as a real server does, unless
//!   `ServerConfig::strategic_merge_for_custom_resources` is set (then it is a merge patch
//!   with atomic lists).
//! - **Lists** always serve the latest state (list-time `resourceVersion` and
//!   `resourceVersionMatch` are ignored); paginated lists page through a snapshot taken at
//!   the first page, as etcd does, and a `continue` from a snapshot dropped by compaction
//!   (or by more than `MAX_LIST_SNAPSHOTS` lists in flight) is a 410.
//! - **Garbage collection** is synchronous and background-style: when an object is removed,
//!   every object with an `ownerReference` to it and no remaining live owner is deleted
//!   (honouring its finalizers). `propagationPolicy: Orphan` skips it; `Foreground` is treated
//!   as background (no `foregroundDeletion` finalizer). Deleting a namespace deletes its
//!   contents at once (no `Terminating` phase).
//! - **Leniency:** a `resourceVersion` sent on create is ignored (a real server rejects it);
//!   `kind`/`apiVersion` may be omitted on create and update (they are filled in).
//! - **Defaulting** is limited to `Deployment.spec.replicas = 1`; Service `type`,
//!   `clusterIP` (10.96.x.y), port `protocol` and `targetPort`; Namespace `status.phase`; and
//!   CRD `status` (Established and NamesAccepted at once, no controller involved).
//! - **Schemas** are not fully enforced: `format`, `uniqueItems`, `allOf`/`anyOf`/`oneOf`,
//!   list-type uniqueness and validation ratcheting are not checked, schema defaults are not
//!   stored, and built-in kinds are checked only for labels and slice addresses (see
//!   `schema`).
//! - **Not implemented:** admission webhooks, RBAC and authentication
//!   beyond one bearer token, protobuf and Table output, the legacy
//!   `/watch/` paths, `pods/log`/`exec`/`eviction` and other subresources, pod scheduling
//!   or any controller (the workload simulator plays those parts).

pub mod crds;
mod defaults;
pub mod discovery;
pub mod error;
pub mod faults;
pub mod http;
pub mod kinds;
pub mod manifests;
mod meta;
pub mod patch;
mod scale;
mod schema;
pub mod selectors;
pub mod store;
mod validation;
pub mod watch;
pub mod write;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{ApiError, Error};
pub use faults::Faults;
pub use kinds::{KindRegistry, ResourceKind};
pub use store::Store;
pub use watch::WatchStats;

/// How to start a [`LocalApiServer`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address; the default `127.0.0.1:0` picks a free port.
    pub addr: SocketAddr,
    /// The bearer token clients must send; random by default.
    pub token: String,
    /// Events retained for resuming watches (older resourceVersions get 410), and the most a
    /// watcher may lag behind before it is cut off.
    pub history_capacity: usize,
    /// How often an idle watch with bookmarks enabled gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Accept `Patch::Strategic` on custom resources (as a merge patch with atomic lists).
    /// Off by default because a real API server answers it with 415 Unsupported Media Type.
    pub strategic_merge_for_custom_resources: bool,
    /// Accept loopback addresses (127.0.0.0/8, ::1) in EndpointSlices. Off by default because
    /// a real API server refuses them; only for set-ups whose workloads cannot listen on
    /// routable addresses (link-local addresses stay refused).
    pub allow_loopback_endpoints: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: uuid::Uuid::new_v4().simple().to_string(),
            history_capacity: 8192,
            bookmark_interval: Duration::from_secs(10),
            strategic_merge_for_custom_resources: false,
            allow_loopback_endpoints: false,
        }
    }
}

/// A running in-memory API server. Dropping it stops the server and closes every watch.
#[derive(Debug)]
pub struct LocalApiServer {
    addr: SocketAddr,
    token: String,
    shared: Arc<http::Shared>,
    kubeconfig_dir: tempfile::TempDir,
    kubeconfig_path: PathBuf,
}

impl LocalApiServer {
    /// Starts a server on an ephemeral 127.0.0.1 port with the default configuration.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(ServerConfig::default()).await
    }

    /// Starts a server with the given configuration. Must run inside a tokio runtime; the
    /// server's tasks run on it.
    pub async fn start_with(config: ServerConfig) -> Result<Self, Error> {
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.addr,
            source,
        })?;
        let store = Arc::new(Store::new(config.history_capacity));
        store.set_strategic_merge_for_custom_resources(config.strategic_merge_for_custom_resources);
        store.set_allow_loopback_endpoints(config.allow_loopback_endpoints);
        let shutdown = CancellationToken::new();
        let shared = Arc::new(http::Shared {
            store: store.clone(),
            faults: Arc::new(Faults::new(store, shutdown.clone())),
            watch_stats: Arc::new(WatchStats::default()),
            token: config.token.clone(),
            address: addr.to_string(),
            bookmark_interval: config.bookmark_interval,
            shutdown,
        });
        let kubeconfig_dir = tempfile::tempdir().map_err(Error::Kubeconfig)?;
        let kubeconfig_path = kubeconfig_dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig_path, kubeconfig_yaml(addr, &config.token))
            .map_err(Error::Kubeconfig)?;
        tokio::spawn(http::serve(listener, shared.clone()));
        tracing::debug!(%addr, "local API server listening");
        Ok(Self {
            addr,
            token: config.token,
            shared,
            kubeconfig_dir,
            kubeconfig_path,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig file (context `local`) pointing at this server; removed on drop.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The directory holding the kubeconfig, for callers that want to put more files there.
    pub fn dir(&self) -> &Path {
        self.kubeconfig_dir.path()
    }

    /// The kubeconfig contents.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(self.addr, &self.token)
    }

    /// A kube-rs client configured from this server's kubeconfig.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())
            .map_err(Error::KubeconfigLoad)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(Error::KubeconfigLoad)?;
        kube::Client::try_from(config).map_err(Error::Client)
    }

    /// Fault injection switches.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The object store, for seeding and inspecting state without HTTP.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Open-watch counter.
    pub fn watch_stats(&self) -> &WatchStats {
        &self.shared.watch_stats
    }

    /// Serves one more kind (like installing a CRD; creating a `CustomResourceDefinition`
    /// object through the API does the same).
    pub fn register_kind(&self, kind: ResourceKind) {
        self.shared.store.register_kind(kind);
    }

    /// Server-side applies every object of a (multi-document) YAML manifest, in order, with
    /// `field_manager`; see [`manifests::apply_manifests`].
    pub fn apply_manifests(
        &self,
        yaml: &str,
        field_manager: &str,
    ) -> Result<Vec<serde_json::Value>, ApiError> {
        manifests::apply_manifests(&self.shared.store, yaml, field_manager, "default")
    }

    /// Stops accepting connections and ends every connection and watch.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Resolves when the server has been shut down.
    pub async fn stopped(&self) {
        self.shared.shutdown.cancelled().await;
    }
}

impl Drop for LocalApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn kubeconfig_yaml(addr: SocketAddr, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: http://{addr}
users:
- name: local
  user:
    token: {token}
contexts:
- name: local
  context:
    cluster: local
    user: local
    namespace: default
current-context: local
preferences: {{}}
"
    )
}
