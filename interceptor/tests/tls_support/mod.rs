//! TLS set-up shared by the tests that need it: the interceptor's TLS listener on the fixture
//! certificates, a test CA per backend (in a temporary directory), TLS backends and a client
//! for the TLS listener.
//!
//! `tests/fixtures` holds self-signed test certificates (never used outside tests):
//! `default.crt` for `default.example.com`, `store/nested/wild.crt` for `store.example.com` and
//! `*.store.example.com`, and `store/other.pem` (RSA) for `other.example.com`.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::common::{Harness, empty};

pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

pub fn cert(path: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(fixture(path)).expect("fixture certificate")
}

/// A client configuration trusting the fixture certificates, offering `alpn`.
pub fn connector(
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in ["default.crt", "store/nested/wild.crt", "store/other.pem"] {
        roots.add(cert(c)).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to the interceptor's TLS listener as `default.example.com`, offering
/// `alpn`.
pub async fn connect_tls_listener(
    h: &Harness,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tls_addr = h.addrs.tls.expect("TLS listener");
    let tcp = tokio::net::TcpStream::connect(tls_addr)
        .await
        .expect("connect");
    let all = [&rustls::version::TLS12, &rustls::version::TLS13];
    connector(alpn, &all)
        .connect(
            ServerName::try_from("default.example.com").expect("name"),
            tcp,
        )
        .await
        .expect("handshake")
}

/// A test CA (in its own temporary directory, as `ca.crt`) and a backend certificate it signed.
pub struct BackendPki {
    pub ca_dir: tempfile::TempDir,
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

impl BackendPki {
    /// The CA directory, as `KEDA_HTTP_TLS_CA_DIRS` takes it.
    pub fn ca_dirs(&self) -> String {
        self.ca_dir.path().display().to_string()
    }

    /// A TLS acceptor with this certificate, offering `alpn`.
    pub fn acceptor(&self, alpn: &[&[u8]]) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .expect("server certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// A CA and a backend certificate for `names`.
pub fn backend_pki(names: &[&str]) -> BackendPki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // A name of its own, so that another test CA is an unknown issuer, not a bad signature.
    static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("keda-http test CA {serial}"),
    );
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
    let ca_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(ca_dir.path().join("ca.crt"), ca.pem()).expect("write CA");
    BackendPki {
        ca_dir,
        cert: leaf.der().clone(),
        key: PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der"),
    }
}

/// The interceptor with its TLS listener on the fixture certificates; `configure` adds to it.
pub async fn start_tls_with(
    min_13: bool,
    configure: impl FnOnce(&mut keda_http_interceptor::Config),
) -> Harness {
    Harness::start(|c| {
        c.proxy_tls_enabled = true;
        c.proxy_tls_cert_path = fixture("default.crt");
        c.proxy_tls_key_path = fixture("default.key");
        c.proxy_tls_cert_store_paths = fixture("store").display().to_string();
        if min_13 {
            c.tls_min_version = Some(keda_http_interceptor::config::TlsVersion::Tls13);
        }
        configure(c);
    })
    .await
}

/// Sends `GET /` with `Host: host` over TLS to the interceptor's TLS listener (HTTP/1.1).
pub async fn get_over_tls(h: &Harness, host: &str) -> (StatusCode, Bytes) {
    let tls = connect_tls_listener(h, &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let req = Request::get("/")
        .header(http::header::HOST, host)
        .body(empty())
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
}
