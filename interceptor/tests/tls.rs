//! The TLS listener (SNI certificate selection, ALPN h2/http1.1, minimum version) and TLS to
//! the backends (verification with the CA directories, skip-verify, h2 by ALPN, plain stays
//! plain).
//!
//! `tests/fixtures` holds self-signed test certificates (never used outside tests):
//! `default.crt` for `default.example.com`, `store/nested/wild.crt` for `store.example.com` and
//! `*.store.example.com`, and `store/other.pem` (RSA) for `other.example.com`. Backend
//! certificates are made per test with `rcgen`, their CA written to a temporary directory.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, TlsConnector};

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

/// A test CA (in its own temporary directory, as `ca.crt`) and a backend certificate it signed.
struct BackendPki {
    ca_dir: tempfile::TempDir,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// A CA and a backend certificate for `names`.
fn backend_pki(names: &[&str]) -> BackendPki {
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

/// Starts a TLS-only backend with `pki`'s certificate, offering `alpn`, answering with
/// `handler`. Returns its address.
async fn tls_backend<H, F>(pki: &BackendPki, alpn: &[&[u8]], handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<TestBody>> + Send + 'static,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .expect("server certificate");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                // A failed handshake (the proxy refused our certificate) just ends here.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Answers `<version> <authority or Host> <X-Forwarded-Proto>`.
async fn describe(req: Request<Incoming>) -> Response<TestBody> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let proto = req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Response::new(full(format!("{:?} {host} {proto}", req.version())))
}

/// The interceptor with its TLS listener on the fixture certificates; `configure` adds to it.
async fn start_tls_with(
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

/// The TLS listener with one route `ns/app` to a TLS backend (verified with its CA dir).
async fn start_tls(min_13: bool) -> Harness {
    let pki = backend_pki(&["app.ns"]);
    let ca_dir = pki.ca_dir.path().display().to_string();
    let h = start_tls_with(min_13, |c| c.tls_ca_dirs = ca_dir).await;
    let addr = tls_backend(&pki, &[b"h2", b"http/1.1"], |req| async move {
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

/// Sends `GET /` with `Host: host` over TLS to the interceptor's TLS listener (HTTP/1.1).
async fn get_over_tls(h: &Harness, host: &str) -> (StatusCode, Bytes) {
    let tls_addr = h.addrs.tls.expect("TLS listener");
    let tcp = tokio::net::TcpStream::connect(tls_addr)
        .await
        .expect("connect");
    let all = [&rustls::version::TLS12, &rustls::version::TLS13];
    let tls = connector(&[b"http/1.1"], &all)
        .connect(
            ServerName::try_from("default.example.com").expect("name"),
            tcp,
        )
        .await
        .expect("handshake");
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

/// Log lines written while the guard lives (this thread; `#[tokio::test]` runs every task on
/// it).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

#[tokio::test]
async fn a_tls_request_reaches_a_tls_backend_verified_with_the_ca_dir() {
    bounded(async {
        let pki = backend_pki(&["app.ns"]);
        let ca_dir = pki.ca_dir.path().display().to_string();
        let h = start_tls_with(false, |c| c.tls_ca_dirs = ca_dir).await;
        // One backend negotiating h2 by ALPN, one speaking only HTTP/1.1.
        let h2 = tls_backend(&pki, &[b"h2", b"http/1.1"], describe).await;
        let h1 = tls_backend(&pki, &[b"http/1.1"], describe).await;
        h.set_endpoints("ns", "app", 80, http1(&[h2]));
        h.install(vec![route("ns", "app", &["app.example.com"], &[])])
            .await;
        let (status, body) = get_over_tls(&h, "app.example.com").await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        assert_eq!(&body[..], b"HTTP/2.0 app.example.com https");

        // The same twice more: the pooled connection is reused and keeps working.
        for _ in 0..2 {
            let (status, _) = get_over_tls(&h, "app.example.com").await;
            assert_eq!(status, StatusCode::OK);
        }

        // An HTTP/1.1-only TLS backend gets HTTP/1.1 with the client's Host.
        h.set_endpoints("ns", "app", 80, http1(&[h1]));
        for _ in 0..3 {
            let (status, body) = get_over_tls(&h, "app.example.com").await;
            assert_eq!(status, StatusCode::OK, "{body:?}");
            assert_eq!(&body[..], b"HTTP/1.1 app.example.com https");
        }
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_unknown_backend_ca_is_a_502_with_a_log_line_and_skip_verify_passes() {
    let logs = Logs::default();
    let _guard = logs.capture();
    bounded(async {
        let pki = backend_pki(&["app.ns"]);
        let other = backend_pki(&["app.ns"]);
        let other_dir = other.ca_dir.path().display().to_string();
        let backend = tls_backend(&pki, &[b"h2", b"http/1.1"], describe).await;

        let h = start_tls_with(false, |c| c.tls_ca_dirs = other_dir.clone()).await;
        h.set_endpoints("ns", "app", 80, http1(&[backend]));
        h.install(vec![route("ns", "app", &[], &[])]).await;
        let (status, _) = get_over_tls(&h, "app.example.com").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        let text = logs.text();
        let line = text
            .lines()
            .find(|l| l.contains("backend TLS handshake failed"))
            .unwrap_or_else(|| panic!("no handshake log line in {text:?}"));
        assert!(line.contains("UnknownIssuer"), "{line}");
        assert!(line.contains(&backend.to_string()), "{line}");
        h.stop().await;

        // A certificate for another name is refused too: the Service name is verified.
        let wrong_name = backend_pki(&["elsewhere.ns"]);
        let wrong_dir = wrong_name.ca_dir.path().display().to_string();
        let wrong_backend = tls_backend(&wrong_name, &[b"http/1.1"], describe).await;
        let h = start_tls_with(false, |c| c.tls_ca_dirs = wrong_dir).await;
        h.set_endpoints("ns", "app", 80, http1(&[wrong_backend]));
        h.install(vec![route("ns", "app", &[], &[])]).await;
        let (status, _) = get_over_tls(&h, "app.example.com").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        h.stop().await;

        // Skip-verify (the deprecated name) accepts the unknown CA.
        let h = start_tls_with(false, |c| {
            c.tls_ca_dirs = other_dir;
            c.proxy_tls_skip_verify = Some(true);
        })
        .await;
        h.set_endpoints("ns", "app", 80, http1(&[backend]));
        h.install(vec![route("ns", "app", &[], &[])]).await;
        let (status, body) = get_over_tls(&h, "app.example.com").await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn grpc_style_h2_streams_both_ways_over_tls() {
    bounded(async {
        let pki = backend_pki(&["app.ns"]);
        let ca_dir = pki.ca_dir.path().display().to_string();
        let h = start_tls_with(false, |c| c.tls_ca_dirs = ca_dir).await;
        // An echo: every request body frame comes straight back as a response frame.
        let backend = tls_backend(&pki, &[b"h2"], |req: Request<Incoming>| async move {
            assert_eq!(req.version(), http::Version::HTTP_2);
            let mut response = Response::new(req.into_body().map_err(Into::into).boxed());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            response
        })
        .await;
        h.set_endpoints("ns", "app", 80, http1(&[backend]));
        h.install(vec![route("ns", "app", &[], &[])]).await;

        let tls_addr = h.addrs.tls.expect("TLS listener");
        let tcp = tokio::net::TcpStream::connect(tls_addr)
            .await
            .expect("connect");
        let all = [&rustls::version::TLS12, &rustls::version::TLS13];
        let tls = connector(&[b"h2"], &all)
            .connect(
                ServerName::try_from("default.example.com").expect("name"),
                tcp,
            )
            .await
            .expect("handshake");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
        >(1);
        let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        }));
        let req = Request::post("https://grpc.example.com/echo.Echo/Stream")
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(body.boxed())
            .expect("request");
        tx.send(Ok(Frame::data(Bytes::from_static(b"ping 0"))))
            .await
            .expect("send");
        let response = sender.send_request(req).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let mut response_body = response.into_body();
        // Each message comes back before the next is sent: both directions stream.
        for i in 0..5 {
            if i > 0 {
                tx.send(Ok(Frame::data(Bytes::from(format!("ping {i}")))))
                    .await
                    .expect("send");
            }
            let mut echoed = Vec::new();
            while echoed.len() < format!("ping {i}").len() {
                let frame = response_body
                    .frame()
                    .await
                    .expect("a frame")
                    .expect("frame ok");
                if let Ok(data) = frame.into_data() {
                    echoed.extend_from_slice(&data);
                }
            }
            assert_eq!(echoed, format!("ping {i}").into_bytes());
        }
        drop(tx);
        while let Some(frame) = response_body.frame().await {
            frame.expect("clean end");
        }
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_plain_request_still_goes_plain() {
    bounded(async {
        let pki = backend_pki(&["app.ns"]);
        let ca_dir = pki.ca_dir.path().display().to_string();
        let h = start_tls_with(false, |c| c.tls_ca_dirs = ca_dir).await;
        let plain = backend(|req: Request<Incoming>| describe(req)).await;
        h.set_endpoints("ns", "app", 80, http1(&[plain]));
        h.install(vec![route("ns", "app", &[], &[])]).await;
        let (status, _, body) = get(&h.proxy_url("/"), "app.example.com").await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        assert_eq!(&body[..], b"HTTP/1.1 app.example.com http");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_invalid_ca_dir_exits_64_naming_it() {
    bounded(async {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keda-http-interceptor"))
            .env_clear()
            .env("KEDA_HTTP_PROXY_PORT", "0")
            .env("KEDA_HTTP_ADMIN_PORT", "0")
            .env("KEDA_HTTP_TLS_CA_DIRS", "/nonexistent/keda-http-ca")
            .kill_on_drop(true)
            .output()
            .await
            .expect("run the binary");
        assert_eq!(output.status.code(), Some(64));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("KEDA_HTTP_TLS_CA_DIRS")
                && stderr.contains("/nonexistent/keda-http-ca"),
            "{stderr}"
        );
    })
    .await;
}
