//! TLS to backends: the rustls client configuration and the pooled TLS connections.
//!
//! A request that arrived on the TLS listener goes to its backend over TLS (compat §1.5,
//! compat §13). The client trusts the system roots (`rustls-native-certs`; the bundled
//! `webpki-roots` when the system has none), the serving and cert-store certificates, and
//! every PEM certificate in the `KEDA_HTTP_TLS_CA_DIRS` directories; skip-verify turns
//! certificate verification off (handshake signatures are still checked). Protocol versions,
//! cipher suites and curves follow the same `KEDA_HTTP_TLS_*` settings as the listener.
//!
//! The name sent as SNI and verified in the certificate is the target Service's host name
//! `<service>.<namespace>`, as upstream does, also when the request goes to a pod address
//! (direct-pod routing). ALPN offers `h2` and `http/1.1` (only `h2` for an
//! `appProtocol: kubernetes.io/h2c` port); an `h2` connection is shared by requests, an
//! HTTP/1.1 one is kept idle for reuse in the one pool of idle connections that plain
//! HTTP/1.1 uses too ([`crate::upstream::pool`]: per endpoint and name, and in total).
//!
//! [`TlsPool`] is generic over the request body so that this module needs nothing from
//! [`crate::proxy`].

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

use crate::config::{Config, ConfigError};
use crate::tls::{self, TlsError};
use crate::upstream::{self, DialError, IdlePool, KeyRef};

/// A boxed error, as hyper's body bounds want it.
type BoxError = Box<dyn StdError + Send + Sync>;

/// The client side of backend TLS: one configuration offering `h2` and `http/1.1`, one
/// offering only `h2`.
#[derive(Clone)]
pub struct UpstreamTls {
    alpn: TlsConnector,
    h2_only: TlsConnector,
    skip_verify: bool,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("skip_verify", &self.skip_verify)
            .finish_non_exhaustive()
    }
}

/// Checks `KEDA_HTTP_TLS_CA_DIRS` at startup: an unreadable directory or file, or a
/// malformed certificate, is a configuration error (exit 64) naming it.
pub fn validated(config: Config) -> Result<Config, ConfigError> {
    match load_ca_dirs(&config.tls_ca_dirs) {
        Ok(_) => Ok(config),
        Err(error) => Err(ConfigError::Invalid(format!(
            "invalid KEDA_HTTP_TLS_CA_DIRS: {error}"
        ))),
    }
}

impl UpstreamTls {
    /// Builds the client configuration from the `KEDA_HTTP_TLS_*` settings.
    pub fn new(config: &Config) -> Result<Self, TlsError> {
        let provider = Arc::new(tls::provider(config)?);
        let versions = tls::versions(config);
        let skip_verify = config.tls_skip_verify();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)?;
        let mut client = if skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(roots(config)?)
                .with_no_client_auth()
        };
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut h2_only = client.clone();
        h2_only.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            alpn: TlsConnector::from(Arc::new(client)),
            h2_only: TlsConnector::from(Arc::new(h2_only)),
            skip_verify,
        })
    }
}

/// The trust anchors: system roots (bundled roots when the system has none), the serving and
/// cert-store certificates, and the CA directories.
fn roots(config: &Config) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "system CA certificate not loaded");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::debug!("no system CA certificates; using the bundled web roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    // As upstream: the serving certificates are trusted too (best effort; the listener
    // reports their errors).
    roots.add_parsable_certificates(tls::serving_certificates(config));
    for cert in load_ca_dirs(&config.tls_ca_dirs)? {
        roots.add(cert.der).map_err(|e| TlsError::File {
            path: cert.path,
            reason: format!("not usable as a CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// A CA certificate and the file it came from.
struct CaCert {
    der: CertificateDer<'static>,
    path: PathBuf,
}

/// Every PEM certificate in the comma-separated directories (not recursive; hidden entries
/// such as Kubernetes' `..data` are skipped, files without a certificate too). A directory
/// without any certificate is an error.
fn load_ca_dirs(dirs: &str) -> Result<Vec<CaCert>, TlsError> {
    let mut certs = Vec::new();
    for dir in dirs.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let dir = Path::new(dir);
        let file_error = |path: &Path, reason: String| TlsError::File {
            path: path.to_owned(),
            reason,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| file_error(dir, e.to_string()))?
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let before = certs.len();
        for file in files {
            let found: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&file)
                .map_err(|e| file_error(&file, e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_error(&file, e.to_string()))?;
            if found.is_empty() {
                tracing::debug!(file = %file.display(), "no certificate in file; skipped");
            }
            certs.extend(found.into_iter().map(|der| CaCert {
                der,
                path: file.clone(),
            }));
        }
        if certs.len() == before {
            return Err(file_error(dir, "no PEM certificate in directory".into()));
        }
    }
    Ok(certs)
}

/// Skip-verify: any certificate is accepted; the handshake signature is still checked.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The name a backend's certificate is verified against: `<service>.<namespace>`.
pub fn server_name(service: &str, namespace: &str) -> Result<ServerName<'static>, TlsConnectError> {
    ServerName::try_from(format!("{service}.{namespace}"))
        .map_err(|e| TlsConnectError::Name(e.to_string()))
}

/// One pooled TLS destination: endpoint address, verified name, `h2` only or not.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsKey {
    /// The endpoint (pod or resolved Service address).
    pub addr: SocketAddr,
    /// SNI and verified name.
    pub name: ServerName<'static>,
    /// ALPN offers only `h2` (the Service port's `appProtocol` is `kubernetes.io/h2c`).
    pub h2_only: bool,
}

/// The connection a request goes out on.
pub enum TlsSender<B> {
    /// A negotiated HTTP/1.1 connection, used by one request at a time.
    Http1(http1::SendRequest<B>),
    /// A negotiated `h2` connection, shared.
    Http2(http2::SendRequest<B>),
}

impl<B> TlsSender<B> {
    /// Whether the connection speaks `h2`.
    pub fn is_h2(&self) -> bool {
        matches!(self, Self::Http2(_))
    }
}

/// Why no TLS connection could be made; nothing of the request was sent.
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    /// The TCP connect failed or did not finish within the connect timeout.
    #[error(transparent)]
    Dial(DialError),
    /// The TLS handshake (or certificate verification) failed.
    #[error("TLS handshake with {name:?} failed: {source}")]
    Handshake {
        /// The verified name.
        name: String,
        /// rustls' error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP handshake on the TLS connection failed.
    #[error("HTTP handshake over TLS: {0}")]
    Http(#[source] hyper::Error),
    /// The Service name is not a valid DNS name.
    #[error("invalid TLS server name: {0}")]
    Name(String),
}

/// Pooled TLS connections to backends.
pub struct TlsPool<B> {
    tls: Arc<UpstreamTls>,
    connect_timeout: Duration,
    h2: Mutex<HashMap<TlsKey, http2::SendRequest<B>>>,
    /// Idle HTTP/1.1 connections, in the pool plain connections use too.
    idle: IdlePool<http1::SendRequest<B>>,
}

impl<B> std::fmt::Debug for TlsPool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPool")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl<B> TlsPool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A pool connecting within `connect_timeout`, keeping idle HTTP/1.1 connections in
    /// `idle`.
    pub fn new(
        tls: Arc<UpstreamTls>,
        connect_timeout: Duration,
        idle: IdlePool<http1::SendRequest<B>>,
    ) -> Self {
        Self {
            tls,
            connect_timeout,
            h2: Mutex::new(HashMap::new()),
            idle,
        }
    }

    /// A connection to `key`: the shared `h2` one or an idle HTTP/1.1 one if there is one,
    /// else a new connection (TCP within the connect timeout, TLS handshake, ALPN).
    pub async fn sender(&self, key: &TlsKey) -> Result<TlsSender<B>, TlsConnectError> {
        if let Some(sender) = self.cached(key) {
            return Ok(sender);
        }
        let tcp = upstream::dial(key.addr, self.connect_timeout)
            .await
            .map_err(TlsConnectError::Dial)?;
        let connector = if key.h2_only {
            &self.tls.h2_only
        } else {
            &self.tls.alpn
        };
        let stream = connector
            .connect(key.name.clone(), tcp)
            .await
            .map_err(|source| {
                let name = key.name.to_str().into_owned();
                tracing::warn!(
                    endpoint = %key.addr,
                    server_name = %name,
                    error = %source,
                    "backend TLS handshake failed"
                );
                TlsConnectError::Handshake { name, source }
            })?;
        let h2 = key.h2_only || stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        let addr = key.addr;
        if h2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(TlsConnectError::Http)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%addr, %error, "backend h2 connection ended");
                }
            });
            let mut conns = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
            conns.retain(|_, s| !s.is_closed());
            conns.insert(key.clone(), sender.clone());
            Ok(TlsSender::Http2(sender))
        } else {
            let sender = upstream::handshake(io, addr)
                .await
                .map_err(TlsConnectError::Http)?;
            Ok(TlsSender::Http1(sender))
        }
    }

    /// The shared `h2` connection to `key`, or an idle HTTP/1.1 one ready for a request.
    fn cached(&self, key: &TlsKey) -> Option<TlsSender<B>> {
        {
            let conns = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(sender) = conns.get(key)
                && !sender.is_closed()
            {
                return Some(TlsSender::Http2(sender.clone()));
            }
        }
        if key.h2_only {
            return None;
        }
        self.idle.take(idle_key(key)).map(TlsSender::Http1)
    }

    /// Sends `req` on `sender`. An HTTP/1.1 connection goes back to the idle list once the
    /// response headers are in (it is reused when the response body has ended). When a
    /// reused connection turns out closed before the request went out, the request goes
    /// once more on a new connection.
    pub async fn send(
        &self,
        key: &TlsKey,
        sender: TlsSender<B>,
        req: Request<B>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut error = match sender {
            TlsSender::Http2(mut sender) => match sender.try_send_request(req).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            },
            TlsSender::Http1(mut sender) => match sender.try_send_request(req).await {
                Ok(response) => {
                    self.idle.park_after(idle_key(key), sender, &response);
                    return Ok(response);
                }
                Err(error) => error,
            },
        };
        let Some(req) = error.take_message() else {
            return Err(SendError::Upstream(error.into_error()));
        };
        tracing::debug!(addr = %key.addr, "pooled backend TLS connection was closed; reconnecting");
        self.h2
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        match self.sender(key).await.map_err(SendError::Connect)? {
            TlsSender::Http2(mut sender) => {
                sender.send_request(req).await.map_err(SendError::Upstream)
            }
            TlsSender::Http1(mut sender) => {
                let response = sender
                    .send_request(req)
                    .await
                    .map_err(SendError::Upstream)?;
                self.idle.park_after(idle_key(key), sender, &response);
                Ok(response)
            }
        }
    }
}

/// The idle-pool key of a TLS destination's HTTP/1.1 connections.
fn idle_key(key: &TlsKey) -> KeyRef<'_> {
    KeyRef::Tls(key.addr, &key.name)
}

/// Why sending on a TLS connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A new connection was needed and could not be made; nothing was sent.
    #[error(transparent)]
    Connect(TlsConnectError),
    /// The exchange failed after the request went out.
    #[error(transparent)]
    Upstream(hyper::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write");
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("cert").pem()
    }

    #[test]
    fn ca_dirs_load_every_certificate_and_skip_keys_and_hidden_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.crt", &ca_pem());
        write(dir.path(), "b.pem", &format!("{}{}", ca_pem(), ca_pem()));
        write(dir.path(), "tls.key", "");
        std::fs::create_dir(dir.path().join("..data")).expect("mkdir");
        let certs = load_ca_dirs(&format!(" {} ,", dir.path().display())).expect("loaded");
        assert_eq!(certs.len(), 3);
        assert!(load_ca_dirs("").expect("none").is_empty());
    }

    #[test]
    fn bad_ca_dirs_name_the_directory_or_file() {
        let missing = load_ca_dirs("/nonexistent/ca").err().expect("missing dir");
        assert!(missing.to_string().contains("/nonexistent/ca"), "{missing}");

        let empty = tempfile::tempdir().expect("tempdir");
        let error = load_ca_dirs(&empty.path().display().to_string())
            .err()
            .expect("empty dir");
        assert!(error.to_string().contains("no PEM certificate"), "{error}");

        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "broken.crt",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        );
        let error = load_ca_dirs(&dir.path().display().to_string())
            .err()
            .expect("broken file");
        assert!(error.to_string().contains("broken.crt"), "{error}");
    }

    #[test]
    fn invalid_ca_dirs_are_a_configuration_error() {
        let mut config = Config::for_tests();
        config.tls_ca_dirs = "/nonexistent/ca".into();
        let error = validated(config).expect_err("invalid");
        assert!(
            error
                .to_string()
                .starts_with("invalid KEDA_HTTP_TLS_CA_DIRS: /nonexistent/ca"),
            "{error}"
        );
    }

    #[test]
    fn the_verified_name_is_the_service_host_name() {
        let name = server_name("app", "ns").expect("valid");
        assert_eq!(name.to_str(), "app.ns");
        assert!(server_name("bad name", "ns").is_err());
    }

    #[test]
    fn client_configuration_builds_with_and_without_verification() {
        let mut config = Config::for_tests();
        assert!(!UpstreamTls::new(&config).expect("verifying").skip_verify);
        config.proxy_tls_skip_verify = Some(true);
        assert!(UpstreamTls::new(&config).expect("skip").skip_verify);
    }
}
