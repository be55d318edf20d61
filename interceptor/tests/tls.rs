//! The TLS listener: SNI certificate selection, ALPN h2/http1.1, minimum version.
//!
//! `tests/fixtures` holds self-signed test certificates (never used outside tests):
//! `default.crt` for `default.example.com`, `store/nested/wild.crt` for `store.example.com` and
//! `*.store.example.com`, and `store/other.pem` (RSA) for `other.example.com`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn cert(path: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(fixture(path)).expect("fixture certificate")
}

fn connector(
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

async fn start_tls(min_13: bool) -> Harness {
    let h = Harness::start(|c| {
        c.proxy_tls_enabled = true;
        c.proxy_tls_cert_path = fixture("default.crt");
        c.proxy_tls_key_path = fixture("default.key");
        c.proxy_tls_cert_store_paths = fixture("store").display().to_string();
        if min_13 {
            c.tls_min_version = Some(keda_http_interceptor::config::TlsVersion::Tls13);
        }
    })
    .await;
    let addr = backend(|req: Request<hyper::body::Incoming>| async move {
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Response::new(full(proto))
    })
    .await;
    h.set_endpoints("ns", "app", 80, http1(&[addr]));
    h.install(vec![route("ns", "app", &[], &[])]).await;
    h
}

#[tokio::test]
async fn sni_selects_the_certificate_and_alpn_negotiates_h2() {
    bounded(async {
        let h = start_tls(false).await;
        let tls_addr = h.addrs.tls.expect("TLS listener");
        let all = [&rustls::version::TLS12, &rustls::version::TLS13];
        // (SNI, expected leaf certificate)
        for (name, leaf) in [
            ("default.example.com", "default.crt"),
            ("a.store.example.com", "store/nested/wild.crt"),
            ("store.example.com", "store/nested/wild.crt"),
            ("other.example.com", "store/other.pem"),
        ] {
            let tcp = tokio::net::TcpStream::connect(tls_addr)
                .await
                .expect("connect");
            let tls = connector(&[b"h2", b"http/1.1"], &all)
                .connect(ServerName::try_from(name).expect("name").to_owned(), tcp)
                .await
                .unwrap_or_else(|e| panic!("handshake for {name}: {e}"));
            let (_, session) = tls.get_ref();
            assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]), "{name}");
            let presented = session.peer_certificates().expect("certificates")[0].clone();
            assert_eq!(presented, cert(leaf), "{name} got the wrong certificate");

            let (mut sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await
            .expect("h2 handshake");
            tokio::spawn(conn);
            let req = Request::get(format!("https://{name}/"))
                .body(empty())
                .expect("request");
            let response = sender.send_request(req).await.expect("response");
            assert_eq!(response.status(), StatusCode::OK);
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(&body[..], b"https", "X-Forwarded-Proto over TLS");
        }
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn http1_over_tls_and_minimum_version() {
    bounded(async {
        let h = start_tls(true).await;
        let tls_addr = h.addrs.tls.expect("TLS listener");
        let tcp = tokio::net::TcpStream::connect(tls_addr)
            .await
            .expect("connect");
        let tls = connector(&[b"http/1.1"], &[&rustls::version::TLS13])
            .connect(
                ServerName::try_from("default.example.com").expect("name"),
                tcp,
            )
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .expect("h1 handshake");
        tokio::spawn(conn);
        let req = Request::get("/")
            .header(http::header::HOST, "default.example.com")
            .body(empty())
            .expect("request");
        let response = sender.send_request(req).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);

        // A TLS 1.2-only client is refused by a 1.3 minimum.
        let tcp = tokio::net::TcpStream::connect(tls_addr)
            .await
            .expect("connect");
        let refused = connector(&[b"http/1.1"], &[&rustls::version::TLS12])
            .connect(
                ServerName::try_from("default.example.com").expect("name"),
                tcp,
            )
            .await;
        assert!(refused.is_err(), "TLS 1.2 handshake must fail");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_certificate_without_its_key_is_a_startup_error() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(fixture("default.crt"), dir.path().join("lonely.crt")).expect("copy");
        let mut config = keda_http_interceptor::Config::for_tests();
        config.proxy_tls_enabled = true;
        config.proxy_tls_cert_path = fixture("default.crt");
        config.proxy_tls_key_path = fixture("default.key");
        config.proxy_tls_cert_store_paths = dir.path().display().to_string();
        let endpoints = Arc::new(keda_http_interceptor::endpoints::StaticEndpoints::default());
        let error = keda_http_interceptor::Interceptor::bind(config, endpoints)
            .await
            .expect_err("missing key");
        assert!(error.to_string().contains("has no key file"), "{error}");
    })
    .await;
}
