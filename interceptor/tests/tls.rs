//! The TLS listener (SNI certificate selection, ALPN h2/http1.1, minimum version) and TLS to
//! the backends (verification with the CA directories, skip-verify, h2 by ALPN, plain stays
//! plain, gRPC streaming both ways through TLS on both sides).
//!
//! Backend certificates are made per test with `rcgen`, their CA written to a temporary
//! directory ([`tls_support`]).

mod common;
mod tls_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tls_support::*;
use tokio::net::TcpListener;

/// Starts a TLS-only backend with `pki`'s certificate, offering `alpn`, answering with
/// `handler`. Returns its address.
async fn tls_backend<H, F>(pki: &BackendPki, alpn: &[&[u8]], handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<TestBody>> + Send + 'static,
{
    let acceptor = pki.acceptor(alpn);
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

/// A request message of the hand-written `test.Chat/Talk` bidirectional-streaming RPC.
#[derive(Clone, PartialEq, prost::Message)]
struct Said {
    #[prost(string, tag = "1")]
    text: String,
}

/// A response message of `test.Chat/Talk`.
#[derive(Clone, PartialEq, prost::Message)]
struct Heard {
    #[prost(string, tag = "1")]
    text: String,
}

type HeardStream =
    Pin<Box<dyn futures::Stream<Item = Result<Heard, tonic::Status>> + Send + 'static>>;

/// `test.Chat/Talk`: answers every message as it arrives, and reports each one it has read on
/// `seen`.
#[derive(Clone)]
struct Chat {
    seen: tokio::sync::mpsc::UnboundedSender<String>,
}

impl tonic::codegen::Service<tonic::Request<tonic::Streaming<Said>>> for Chat {
    type Response = tonic::Response<HeardStream>;
    type Error = tonic::Status;
    type Future = futures::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Said>>) -> Self::Future {
        let inbound = request.into_inner();
        let replies = futures::stream::unfold(
            (inbound, self.seen.clone()),
            |(mut inbound, seen)| async move {
                match inbound.message().await {
                    Ok(Some(said)) => {
                        let _ = seen.send(said.text.clone());
                        let heard = Heard {
                            text: format!("heard {}", said.text),
                        };
                        Some((Ok(heard), (inbound, seen)))
                    }
                    Ok(None) | Err(_) => None,
                }
            },
        );
        futures::future::ready(Ok(tonic::Response::new(Box::pin(replies) as HeardStream)))
    }
}

/// A tonic gRPC server (h2 only) behind a TLS listener with `pki`'s certificate.
async fn grpc_tls_backend(pki: &BackendPki, chat: Chat) -> SocketAddr {
    let acceptor = pki.acceptor(&[b"h2"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let chat = chat.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    let chat = chat.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/test.Chat/Talk");
                        let codec = tonic_prost::ProstCodec::<Heard, Said>::default();
                        let mut grpc = tonic::server::Grpc::new(codec);
                        Ok::<_, Infallible>(grpc.streaming(chat, req).await)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Connects tonic's channel to the interceptor's TLS listener (ALPN `h2`).
#[derive(Clone)]
struct ToTlsListener(SocketAddr);

impl tonic::codegen::Service<http::Uri> for ToTlsListener {
    type Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let all = [&rustls::version::TLS12, &rustls::version::TLS13];
            let name = ServerName::try_from("default.example.com").expect("name");
            let tls = connector(&[b"h2"], &all).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[tokio::test]
async fn grpc_over_tls_streams_both_ways() {
    bounded(async {
        let pki = backend_pki(&["app.ns"]);
        let ca_dir = pki.ca_dirs();
        let h = start_tls_with(false, |c| c.tls_ca_dirs = ca_dir).await;
        let (seen, mut server_saw) = tokio::sync::mpsc::unbounded_channel();
        let backend = grpc_tls_backend(&pki, Chat { seen }).await;
        h.set_endpoints("ns", "app", 80, http1(&[backend]));
        h.install(vec![route("ns", "app", &[], &[])]).await;

        let tls_addr = h.addrs.tls.expect("TLS listener");
        let channel = tonic::transport::Endpoint::from_static("http://grpc.example.com")
            .connect_with_connector(ToTlsListener(tls_addr))
            .await
            .expect("channel");
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.expect("ready");
        let (say, said) = tokio::sync::mpsc::channel::<Said>(1);
        let outbound = futures::stream::unfold(said, |mut said| async move {
            said.recv().await.map(|message| (message, said))
        });
        say.send(Said { text: "0".into() }).await.expect("send");
        let response = client
            .streaming(
                tonic::Request::new(outbound),
                http::uri::PathAndQuery::from_static("/test.Chat/Talk"),
                tonic_prost::ProstCodec::<Said, Heard>::default(),
            )
            .await
            .expect("response headers");
        let mut inbound = response.into_inner();
        for i in 0..5 {
            if i > 0 {
                say.send(Said {
                    text: i.to_string(),
                })
                .await
                .expect("send");
            }
            // The server read message i before message i+1 exists: requests stream.
            assert_eq!(server_saw.recv().await, Some(i.to_string()));
            // Its answer arrives while the request is still open: responses stream.
            let heard = inbound.message().await.expect("message").expect("one more");
            assert_eq!(heard.text, format!("heard {i}"));
        }
        drop(say);
        assert_eq!(inbound.message().await.expect("clean end"), None);
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
