//! The harness: the whole system on one machine for scenarios and the demo.
//!
//! [`Harness::start`] brings up, in order:
//!
//! 1. the API: the in-memory [`LocalApiServer`] (default; as strict as a real server), or
//!    with `E2E_API=external` the server `KUBECONFIG` points at. Either way the harness
//!    installs our CRDs, and KEDA's ScaledObject CRD (from `kube_standin::crds`) only when
//!    the server has none;
//! 2. the add-on's Services in namespace `keda` (interceptor admin and proxy, external
//!    scaler), without selectors, and EndpointSlices pointing at the ports the real processes
//!    listen on at [`Harness::process_address`] (the test hosts' bridge address), so the
//!    scaler finds the interceptor's admin endpoint as in a cluster;
//! 3. the workload [`Simulator`] (commands from a [`CommandTable`]; the `hello` and
//!    `keda-http-hello` images run the `hello` binary, the `e2e-echo` image the `e2e-echo`
//!    binary, from the binary directory when they exist);
//! 4. the [`KedaStandIn`] over gRPC, with `keda-add-ons-http-external-scaler.keda:9090`
//!    mapped to the scaler's loopback port in its [`AddressTable`];
//! 5. the product binaries that are enabled ([`Components`]): scaler, interceptor, operator,
//!    configured by kubeconfig and the environment variables the chart sets, each awaited
//!    until its port accepts connections. With [`HarnessConfig::interceptors`] above one,
//!    several interceptor processes run behind a TCP forwarder on the proxy port (the proxy
//!    Service), each with its own admin EndpointSlice; [`Harness::stop_interceptor`] and
//!    [`Harness::start_interceptor`] restart one of them as Kubernetes restarts a pod.
//!
//! # Where the binaries come from
//!
//! Cargo only gives integration tests the paths of their own crate's binaries
//! (`CARGO_BIN_EXE_*`), so the product binaries are taken from a directory:
//! `KEDA_HTTP_E2E_BIN_DIR` if set, else the directory of the running executable (with a
//! trailing `deps/` removed, i.e. `target/debug` for tests). Build them first
//! (`cargo build -p keda-http-interceptor -p keda-http-scaler -p keda-http-operator -p hello`)
//! or call [`build_binaries`], which runs exactly that with `$CARGO`.
//!
//! Every process the harness starts is spawned with `kill_on_drop`: dropping the harness (also
//! while a test panics) kills them; [`Harness::stop`] stops them with `SIGTERM` first. The
//! harness never signals a process it did not start.
//!
//! Pods run in network-namespace test hosts on 198.51.100.0/24 (see
//! [`crate::simulator::hosts`]), so every EndpointSlice the harness and the simulator write
//! is valid on a real kube-apiserver; creating them needs root, and the harness fails at
//! start with the reason otherwise. `E2E_LOOPBACK_PODS=1` keeps everything on 127.0.0.1 (and
//! relaxes only the local stand-in's loopback check).

pub mod forwarder;
pub mod manifests;
pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use serde_json::json;

use crate::keda::grpc::GrpcConnector;
use crate::keda::{AddressTable, KedaConfig, KedaStandIn};
use crate::simulator::hosts::{self, PodNetwork};
use crate::simulator::{CommandSpec, CommandTable, Simulator, SimulatorConfig};
use kube_standin::{LocalApiServer, ServerConfig};
use process::{ManagedProcess, free_port, wait_listening};

/// The add-on's namespace.
pub const NAMESPACE: &str = "keda";
/// The interceptor admin Service (the scaler discovers interceptors through its slices).
pub const INTERCEPTOR_ADMIN_SERVICE: &str = "keda-add-ons-http-interceptor-admin";
/// The interceptor proxy Service.
pub const INTERCEPTOR_PROXY_SERVICE: &str = "keda-add-ons-http-interceptor-proxy";
/// The interceptor Deployment name (configuration only; it runs as a process).
pub const INTERCEPTOR_DEPLOYMENT: &str = "keda-add-ons-http-interceptor";
/// The external scaler Service.
pub const SCALER_SERVICE: &str = "keda-add-ons-http-external-scaler";
/// The scaler Service port written into `scalerAddress`.
pub const SCALER_SERVICE_PORT: u16 = 9090;
/// The `endpointslice.kubernetes.io/managed-by` value of the harness's own slices.
pub const HARNESS_MANAGED_BY: &str = "harness.e2e.keda-http";
/// KEDA's ScaledObject CRD, installed only when absent.
pub const KEDA_SCALED_OBJECT_CRD_NAME: &str = "scaledobjects.keda.sh";
/// Environment variable selecting the API: `external` uses `KUBECONFIG`.
pub const ENV_API: &str = "E2E_API";
/// Environment variable naming the directory of the product binaries.
pub const ENV_BIN_DIR: &str = "KEDA_HTTP_E2E_BIN_DIR";

/// Harness errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local API server did not start.
    #[error("local API server: {0}")]
    Api(#[from] kube_standin::Error),
    /// A Kubernetes call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What the harness was doing.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// A manifest is malformed.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A configuration problem (environment, missing binary).
    #[error("{0}")]
    Config(String),
    /// No free port.
    #[error("allocating a port: {0}")]
    Port(#[source] std::io::Error),
    /// A process could not be started.
    #[error("starting {name} ({program}): {source}")]
    Spawn {
        /// Component.
        name: String,
        /// Program path.
        program: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A process exited during startup.
    #[error("{name} exited during startup: {status}")]
    Exited {
        /// Component.
        name: String,
        /// Exit status.
        status: String,
    },
    /// A process did not listen in time.
    #[error("{name} did not listen on 127.0.0.1:{port} in time")]
    NotListening {
        /// Component.
        name: String,
        /// The port.
        port: u16,
    },
    /// `cargo build` failed.
    #[error("cargo build failed: {0}")]
    Build(String),
}

/// Which API server to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiChoice {
    /// The in-memory API server.
    Local,
    /// The server of this kubeconfig file.
    External(PathBuf),
}

impl ApiChoice {
    /// `E2E_API=external` with `KUBECONFIG` → external; unset or `local` → local.
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var(ENV_API).ok().as_deref() {
            None | Some("" | "local") => Ok(Self::Local),
            Some("external") => std::env::var_os("KUBECONFIG")
                .map(|p| Self::External(PathBuf::from(p)))
                .ok_or_else(|| Error::Config(format!("{ENV_API}=external needs KUBECONFIG"))),
            Some(other) => Err(Error::Config(format!(
                "{ENV_API}={other}: expected `local` or `external`"
            ))),
        }
    }
}

/// Which product binaries to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Components {
    /// `keda-http-interceptor`.
    pub interceptor: bool,
    /// `keda-http-scaler`.
    pub scaler: bool,
    /// `keda-http-operator`.
    pub operator: bool,
}

impl Components {
    /// All three.
    pub fn all() -> Self {
        Self {
            interceptor: true,
            scaler: true,
            operator: true,
        }
    }

    /// None: only the local cluster.
    pub fn none() -> Self {
        Self {
            interceptor: false,
            scaler: false,
            operator: false,
        }
    }
}

/// Harness settings.
#[derive(Clone, Debug)]
pub struct HarnessConfig {
    /// The API server.
    pub api: ApiChoice,
    /// Where the product binaries are.
    pub bin_dir: PathBuf,
    /// Which of them to start.
    pub components: Components,
    /// KEDA stand-in timings.
    pub keda: KedaConfig,
    /// Simulator timings.
    pub simulator: SimulatorConfig,
    /// Extra environment for every product binary (after the harness's own).
    pub component_env: Vec<(String, String)>,
    /// Let the product binaries write to this process's stdout/stderr.
    pub inherit_output: bool,
    /// How long each product binary may take to listen.
    pub startup_timeout: Duration,
    /// `SIGTERM` → `SIGKILL` when stopping.
    pub grace: Duration,
    /// How many interceptor processes to run (default 1). With more than one, each listens
    /// on its own ports, [`Harness::proxy_addr`] is a TCP forwarder in front of them (as the
    /// proxy Service's kube-proxy would be) and the admin Service has one EndpointSlice per
    /// process, so the scaler sums their queues.
    pub interceptors: usize,
}

impl HarnessConfig {
    /// The API from the environment, binaries from [`bin_dir`], everything started, fast
    /// KEDA timings.
    pub fn from_env() -> Result<Self, Error> {
        Ok(Self {
            api: ApiChoice::from_env()?,
            bin_dir: bin_dir(),
            components: Components::all(),
            keda: KedaConfig::fast(),
            simulator: SimulatorConfig::default(),
            component_env: Vec::new(),
            inherit_output: false,
            startup_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            interceptors: 1,
        })
    }
}

/// `KEDA_HTTP_E2E_BIN_DIR`, else the running executable's directory without a trailing
/// `deps` (so `target/debug` for tests and binaries alike).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_BIN_DIR) {
        return PathBuf::from(dir);
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    if exe_dir.file_name().is_some_and(|n| n == "deps") {
        exe_dir.parent().map(Path::to_path_buf).unwrap_or(exe_dir)
    } else {
        exe_dir
    }
}

/// Runs `$CARGO build -p <package>...` (debug profile) and waits for it.
pub async fn build_binaries(packages: &[&str]) -> Result<(), Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = tokio::process::Command::new(cargo);
    command.arg("build").arg("--quiet");
    for package in packages {
        command.arg("-p").arg(package);
    }
    let status = command
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| Error::Build(e.to_string()))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Build(status.to_string()))
    }
}

/// The loopback ports of the product binaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// Interceptor proxy.
    pub proxy: u16,
    /// Interceptor admin (`/queue`).
    pub admin: u16,
    /// Interceptor metrics.
    pub interceptor_metrics: u16,
    /// Scaler gRPC.
    pub scaler: u16,
    /// Scaler metrics.
    pub scaler_metrics: u16,
    /// Operator metrics.
    pub operator_metrics: u16,
    /// Operator health probes.
    pub operator_probes: u16,
}

impl Ports {
    fn allocate() -> Result<Self, Error> {
        Ok(Self {
            proxy: free_port()?,
            admin: free_port()?,
            interceptor_metrics: free_port()?,
            scaler: free_port()?,
            scaler_metrics: free_port()?,
            operator_metrics: free_port()?,
            operator_probes: free_port()?,
        })
    }
}

/// The loopback ports of one interceptor process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterceptorPorts {
    /// Proxy.
    pub proxy: u16,
    /// Admin (`/queue`, `/routes`).
    pub admin: u16,
    /// Metrics.
    pub metrics: u16,
}

/// How to (re)start one interceptor process.
struct InterceptorSlot {
    ports: InterceptorPorts,
    env: Vec<(String, String)>,
    process: Option<ManagedProcess>,
}

/// The running system.
pub struct Harness {
    // Field order is drop order: processes first, the API server last.
    interceptors: Vec<InterceptorSlot>,
    forwarder: Option<forwarder::Forwarder>,
    processes: Vec<ManagedProcess>,
    keda: Option<KedaStandIn>,
    simulator: Option<Simulator>,
    client: Client,
    kubeconfig: PathBuf,
    addresses: AddressTable,
    commands: CommandTable,
    ports: Ports,
    grace: Duration,
    bin_dir: PathBuf,
    inherit_output: bool,
    startup_timeout: Duration,
    network: PodNetwork,
    api: Option<LocalApiServer>,
}

impl Harness {
    /// Starts everything `config` asks for (see the module docs).
    pub async fn start(config: HarnessConfig) -> Result<Self, Error> {
        let network = config.simulator.network;
        if network == PodNetwork::TestHosts {
            // Fail now, with the reason, rather than with pods that never start.
            tokio::task::spawn_blocking(hosts::prepare)
                .await
                .map_err(|e| Error::Config(e.to_string()))?
                .map_err(|e| Error::Config(format!("test hosts for the pods: {e}")))?;
        }
        let (api, client, kubeconfig) = match &config.api {
            ApiChoice::Local => {
                // As strict as a real server, except loopback slice addresses when the pods
                // run on loopback (E2E_LOOPBACK_PODS=1).
                let server = LocalApiServer::start_with(ServerConfig {
                    allow_loopback_endpoints: network == PodNetwork::Loopback,
                    ..ServerConfig::default()
                })
                .await?;
                let client = server.client().await?;
                let path = server.kubeconfig_path().to_path_buf();
                install_crds(&client).await?;
                (Some(server), client, path)
            }
            ApiChoice::External(path) => {
                let client = external_client(path).await?;
                install_crds(&client).await?;
                remove_stale_slices(&client).await?;
                (None, client, path.clone())
            }
        };
        let ports = Ports::allocate()?;
        let interceptor_ports = if config.interceptors <= 1 {
            vec![InterceptorPorts {
                proxy: ports.proxy,
                admin: ports.admin,
                metrics: ports.interceptor_metrics,
            }]
        } else {
            (0..config.interceptors)
                .map(|_| {
                    Ok(InterceptorPorts {
                        proxy: free_port()?,
                        admin: free_port()?,
                        metrics: free_port()?,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?
        };
        install_addon_services(
            &client,
            &ports,
            &interceptor_ports,
            network.harness_address(),
        )
        .await?;

        let addresses = AddressTable::new();
        addresses.insert(
            &format!("{SCALER_SERVICE}.{NAMESPACE}:{SCALER_SERVICE_PORT}"),
            &format!("127.0.0.1:{}", ports.scaler),
        );
        let commands = CommandTable::new();
        let hello = config.bin_dir.join("hello");
        if hello.exists() {
            // The hello chart's image is ghcr.io/keda-http/keda-http-hello:<tag>.
            commands.for_image("keda-http-hello", CommandSpec::new(&hello));
            commands.for_image("hello", CommandSpec::new(hello));
        }
        // The scenarios' protocol backend. Registered before the simulator starts, so that
        // Deployments already in a reused external API server get their pods at once.
        let echo = config.bin_dir.join("e2e-echo");
        if echo.exists() {
            commands.for_image("e2e-echo", CommandSpec::new(echo));
        }
        let mut harness = Self {
            interceptors: interceptor_ports
                .into_iter()
                .map(|ports| InterceptorSlot {
                    ports,
                    env: Vec::new(),
                    process: None,
                })
                .collect(),
            forwarder: None,
            processes: Vec::new(),
            keda: None,
            simulator: Some(Simulator::start(
                client.clone(),
                config.simulator.clone(),
                commands.clone(),
            )),
            client: client.clone(),
            kubeconfig,
            addresses: addresses.clone(),
            commands,
            ports,
            grace: config.grace,
            bin_dir: config.bin_dir.clone(),
            inherit_output: config.inherit_output,
            startup_timeout: config.startup_timeout,
            network,
            api,
        };
        harness.keda = Some(KedaStandIn::start(
            client,
            config.keda,
            addresses,
            Arc::new(GrpcConnector::new()),
        ));
        harness.start_components(&config).await?;
        Ok(harness)
    }

    async fn start_components(&mut self, config: &HarnessConfig) -> Result<(), Error> {
        let kubeconfig = self.kubeconfig.display().to_string();
        let p = self.ports;
        let common = |mut env: Vec<(String, String)>| {
            env.push(("KUBECONFIG".into(), kubeconfig.clone()));
            env.push(("KEDA_HTTP_LOG_FORMAT".into(), "console".into()));
            env.extend(config.component_env.iter().cloned());
            env
        };
        let kv = |k: &str, v: String| (k.to_owned(), v);
        if config.components.scaler {
            let env = common(vec![
                kv("KEDA_HTTP_SCALER_PORT", p.scaler.to_string()),
                kv("KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE", NAMESPACE.into()),
                kv(
                    "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE",
                    INTERCEPTOR_ADMIN_SERVICE.into(),
                ),
                kv(
                    "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT",
                    INTERCEPTOR_DEPLOYMENT.into(),
                ),
                kv("KEDA_HTTP_SCALER_TARGET_ADMIN_PORT", p.admin.to_string()),
                kv("OTEL_PROM_EXPORTER_PORT", p.scaler_metrics.to_string()),
            ]);
            self.spawn(config, "keda-http-scaler", &[], &env, p.scaler)
                .await?;
        }
        if config.components.interceptor {
            for i in 0..self.interceptors.len() {
                let ip = self.interceptors[i].ports;
                self.interceptors[i].env = common(vec![
                    kv("KEDA_HTTP_PROXY_PORT", ip.proxy.to_string()),
                    kv("KEDA_HTTP_ADMIN_PORT", ip.admin.to_string()),
                    // Pods' test hosts and the scaler reach the admin port through the
                    // bridge address in the EndpointSlices; loopback-only otherwise.
                    kv(
                        "KEDA_HTTP_BIND_ADDRESS",
                        match config.simulator.network {
                            PodNetwork::TestHosts => "0.0.0.0".into(),
                            PodNetwork::Loopback => "127.0.0.1".into(),
                        },
                    ),
                    kv("OTEL_PROM_EXPORTER_PORT", ip.metrics.to_string()),
                    kv("KEDA_HTTP_SHUTDOWN_DELAY", "0s".into()),
                    kv("KEDA_HTTP_DRAIN_TIMEOUT", "5s".into()),
                ]);
                self.start_interceptor(i).await?;
            }
            if self.interceptors.len() > 1 {
                let backends = self.interceptors.iter().map(|s| s.ports.proxy).collect();
                self.forwarder = Some(forwarder::Forwarder::start(p.proxy, backends).await?);
            }
        }
        if config.components.operator {
            let env = common(vec![
                kv(
                    "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE",
                    SCALER_SERVICE.into(),
                ),
                kv(
                    "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT",
                    SCALER_SERVICE_PORT.to_string(),
                ),
                kv("KEDA_HTTP_OPERATOR_NAMESPACE", NAMESPACE.into()),
            ]);
            let args = [
                format!("--metrics-bind-address=127.0.0.1:{}", p.operator_metrics),
                format!(
                    "--health-probe-bind-address=127.0.0.1:{}",
                    p.operator_probes
                ),
            ];
            self.spawn(config, "keda-http-operator", &args, &env, p.operator_probes)
                .await?;
        }
        Ok(())
    }

    async fn spawn(
        &mut self,
        config: &HarnessConfig,
        binary: &str,
        args: &[String],
        env: &[(String, String)],
        port: u16,
    ) -> Result<(), Error> {
        let program = config.bin_dir.join(binary);
        if !program.exists() {
            return Err(Error::Config(format!(
                "{} not found; build it (cargo build -p {binary}) or set {ENV_BIN_DIR}",
                program.display()
            )));
        }
        let mut process =
            ManagedProcess::spawn(binary, &program, args, env, config.inherit_output)?;
        let waited = wait_listening(&mut process, port, config.startup_timeout).await;
        // Keep it even on failure, so it is stopped with the rest.
        self.processes.push(process);
        waited
    }

    /// The ports of every interceptor process (one unless [`HarnessConfig::interceptors`]
    /// asked for more).
    pub fn interceptor_ports(&self) -> Vec<InterceptorPorts> {
        self.interceptors.iter().map(|s| s.ports).collect()
    }

    /// The pid of interceptor `index`, while it runs.
    pub fn interceptor_pid(&self, index: usize) -> Option<u32> {
        self.interceptors
            .get(index)
            .and_then(|s| s.process.as_ref())
            .and_then(ManagedProcess::id)
    }

    /// Stops interceptor `index` as Kubernetes stops a pod: out of the proxy forwarder's
    /// rotation (a terminating endpoint), `SIGTERM`, then `SIGKILL` after the harness's grace
    /// period. Returns the exit status text (`None` if it was not
    /// running).
    pub async fn stop_interceptor(&mut self, index: usize) -> Option<String> {
        if let Some(forwarder) = &self.forwarder {
            forwarder.set_ready(index, false);
        }
        let process = self.interceptors.get_mut(index)?.process.take()?;
        Some(process.stop(self.grace).await)
    }

    /// (Re)starts interceptor `index` on its ports and waits until its proxy port listens.
    pub async fn start_interceptor(&mut self, index: usize) -> Result<(), Error> {
        let Some(slot) = self.interceptors.get(index) else {
            return Err(Error::Config(format!("no interceptor {index}")));
        };
        if slot.process.is_some() {
            return Ok(());
        }
        let program = self.bin_dir.join("keda-http-interceptor");
        if !program.exists() {
            return Err(Error::Config(format!(
                "{} not found; build it (cargo build -p keda-http-interceptor) or set {ENV_BIN_DIR}",
                program.display()
            )));
        }
        let port = slot.ports.proxy;
        let mut process = ManagedProcess::spawn(
            "keda-http-interceptor",
            &program,
            &[],
            &slot.env,
            self.inherit_output,
        )?;
        let waited = wait_listening(&mut process, port, self.startup_timeout).await;
        // Keep it even on failure, so it is stopped with the rest.
        self.interceptors[index].process = Some(process);
        if waited.is_ok()
            && let Some(forwarder) = &self.forwarder
        {
            forwarder.set_ready(index, true);
        }
        waited
    }

    /// A client of the API server.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The kubeconfig the product binaries use.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The in-memory API server, when used.
    pub fn local_api(&self) -> Option<&LocalApiServer> {
        self.api.as_ref()
    }

    /// Where pods and the EndpointSlices the harness writes reach the harness's processes:
    /// the test hosts' bridge address (198.51.100.1), or 127.0.0.1 with `E2E_LOOPBACK_PODS=1`.
    /// A stand-in for a product binary must listen here.
    pub fn process_address(&self) -> std::net::IpAddr {
        self.network.harness_address()
    }

    /// The product binaries' ports.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// The interceptor proxy's address.
    pub fn proxy_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.proxy))
    }

    /// The KEDA stand-in's address table (scaler addresses → loopback).
    pub fn addresses(&self) -> &AddressTable {
        &self.addresses
    }

    /// The simulator's command table (Deployments → commands).
    pub fn commands(&self) -> &CommandTable {
        &self.commands
    }

    /// Applies a (multi-document) YAML manifest; see [`manifests::apply_yaml`].
    pub async fn apply_yaml(
        &self,
        yaml: &str,
        default_namespace: &str,
    ) -> Result<Vec<String>, Error> {
        manifests::apply_yaml(&self.client, yaml, default_namespace).await
    }

    /// Stops the product binaries (`SIGTERM`, grace period), then the KEDA stand-in and the
    /// simulator (its pods gracefully), then the API server.
    pub async fn stop(mut self) {
        for slot in &mut self.interceptors {
            if let Some(process) = slot.process.take() {
                let status = process.stop(self.grace).await;
                tracing::debug!(process = "keda-http-interceptor", %status, "stopped");
            }
        }
        self.forwarder = None;
        while let Some(process) = self.processes.pop() {
            let name = process.name().to_owned();
            let status = process.stop(self.grace).await;
            tracing::debug!(process = %name, %status, "stopped");
        }
        if let Some(keda) = self.keda.take() {
            keda.stop().await;
        }
        if let Some(simulator) = self.simulator.take() {
            simulator.stop().await;
        }
    }
}

async fn external_client(path: &Path) -> Result<Client, Error> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?;
    Client::try_from(config).map_err(|source| Error::Kube {
        what: "building the client".into(),
        source,
    })
}

/// Deletes the EndpointSlices an earlier harness wrote (its simulator's pods and its
/// processes' ports are gone with it), so that a harness on a reused external API server does
/// not route to dead loopback ports. The new harness writes its own.
async fn remove_stale_slices(client: &Client) -> Result<(), Error> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{DeleteParams, ListParams};
    let all: kube::Api<EndpointSlice> = kube::Api::all(client.clone());
    let selector = format!(
        "endpointslice.kubernetes.io/managed-by in ({},{HARNESS_MANAGED_BY})",
        crate::simulator::slices::MANAGED_BY
    );
    let stale = all
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Kube {
            what: "listing stale EndpointSlices".into(),
            source,
        })?;
    for slice in stale.items {
        let (Some(namespace), Some(name)) = (slice.metadata.namespace, slice.metadata.name) else {
            continue;
        };
        let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client.clone(), &namespace);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    what: format!("deleting EndpointSlice {namespace}/{name}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Installs our CRDs, and KEDA's ScaledObject CRD only when the cluster has none: a real
/// cluster's KEDA CRD is never replaced by the stand-in's.
async fn install_crds(client: &Client) -> Result<(), Error> {
    for crd in keda_http_api::crd::crds() {
        let value =
            keda_http_api::crd::crd_value(&crd).map_err(|e| Error::Manifest(e.to_string()))?;
        manifests::apply_value(client, value, NAMESPACE).await?;
    }
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let present = crds
        .get_opt(KEDA_SCALED_OBJECT_CRD_NAME)
        .await
        .map_err(|source| Error::Kube {
            what: format!("reading CRD {KEDA_SCALED_OBJECT_CRD_NAME}"),
            source,
        })?;
    if present.is_none() {
        manifests::apply_yaml(
            client,
            kube_standin::crds::KEDA_SCALED_OBJECT_CRD,
            NAMESPACE,
        )
        .await?;
    }
    Ok(())
}

/// The add-on's Services (no selectors: the processes are not simulated pods) and
/// EndpointSlices pointing at the processes' ports on `address` (the test hosts' bridge
/// address, or loopback with `E2E_LOOPBACK_PODS=1`).
async fn install_addon_services(
    client: &Client,
    ports: &Ports,
    interceptors: &[InterceptorPorts],
    address: std::net::IpAddr,
) -> Result<(), Error> {
    let namespace = json!({ "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": NAMESPACE } });
    manifests::apply_value(client, namespace, NAMESPACE).await?;
    let services = [
        (INTERCEPTOR_ADMIN_SERVICE, "admin", 9090, ports.admin),
        (INTERCEPTOR_PROXY_SERVICE, "proxy", 8080, ports.proxy),
        (SCALER_SERVICE, "grpc", SCALER_SERVICE_PORT, ports.scaler),
    ];
    for (name, port_name, service_port, local_port) in services {
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "namespace": NAMESPACE },
            "spec": { "ports": [{ "name": port_name, "port": service_port, "protocol": "TCP" }] }
        });
        manifests::apply_value(client, service, NAMESPACE).await?;
        // One slice per interceptor process behind the admin Service (a slice has one port
        // list; each process has its own port), one slice for the others.
        let local_ports: Vec<u16> = if name == INTERCEPTOR_ADMIN_SERVICE {
            interceptors.iter().map(|i| i.admin).collect()
        } else {
            vec![local_port]
        };
        for (index, local_port) in local_ports.into_iter().enumerate() {
            let slice_name = if index == 0 {
                format!("{name}-local")
            } else {
                format!("{name}-local-{index}")
            };
            let slice = json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "namespace": NAMESPACE,
                    "labels": {
                        crate::simulator::slices::SERVICE_NAME_LABEL: name,
                        "endpointslice.kubernetes.io/managed-by": HARNESS_MANAGED_BY,
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{
                    "addresses": [address.to_string()],
                    "conditions": { "ready": true, "serving": true, "terminating": false },
                }],
                "ports": [{ "name": port_name, "port": local_port, "protocol": "TCP" }],
            });
            manifests::apply_value(client, slice, NAMESPACE).await?;
        }
    }
    Ok(())
}
