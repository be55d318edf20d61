//! `/metrics` with `--metrics-secure` (certificate from `--metrics-cert-dir`) and
//! `--metrics-auth`: served over TLS with that certificate, and a request without a bearer
//! token is refused with 401 before any API call. (The token review itself is unit-tested
//! against a mocked API in `metrics_access`; the local API server does not implement it.)

mod common;

use std::sync::Arc;

use common::*;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_over_tls_require_a_token() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    std::fs::write(dir.path().join("tls.crt"), generated.cert.pem()).expect("write");
    std::fs::write(
        dir.path().join("tls.key"),
        generated.signing_key.serialize_pem(),
    )
    .expect("write");

    let mut cfg = config();
    cfg.metrics_addr = Some("127.0.0.1:0".parse().expect("addr"));
    cfg.metrics_secure = true;
    cfg.metrics_auth = true;
    cfg.metrics_cert_dir = Some(dir.path().to_owned());
    let operator = Running::start(cluster.client.clone(), cfg).await;
    let addr = operator.metrics_addr.expect("metrics listener");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(generated.cert.der().clone())
        .expect("trust the test certificate");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut tls = within(
        "handshake",
        connector.connect(ServerName::try_from("localhost").expect("name"), tcp),
    )
    .await
    .expect("TLS handshake with the configured certificate");
    tls.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify; what was read is enough.
    let _ = within("response", tls.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.0 401") || text.starts_with("HTTP/1.1 401"),
        "{text}"
    );

    // Plain HTTP on the TLS port gets nothing useful.
    let mut plain = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    plain
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    let _ = within("plain response", plain.read_to_end(&mut raw)).await;
    assert!(!String::from_utf8_lossy(&raw).contains("controller_runtime"));

    operator.stop().await.expect("clean stop");
}
