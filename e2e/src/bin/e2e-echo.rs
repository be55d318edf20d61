//! `e2e-echo`: the protocol backend of the scenarios the hello app cannot serve. Listens on
//! `$BIND_ADDRESS:$PORT` (default 127.0.0.1), HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port:
//!
//! - `GET /healthz`: `200 ok` (the readiness path);
//! - `GET /ws` with `Upgrade: websocket`: the RFC 6455 handshake, then every text or binary
//!   message is sent back;
//! - `content-type: application/grpc*` over HTTP/2: a gRPC echo for any method. Each
//!   length-prefixed message is sent back as soon as its bytes arrive (so unary calls and
//!   bidirectional streams both work), then the trailers `grpc-status: 0`. Over HTTP/1.1 it
//!   answers `grpc-status: 12` (UNIMPLEMENTED), so a caller can tell that h2c was not used;
//! - anything else: `200 echo <ECHO_NAME>` (`<address>:<PORT>` when `ECHO_NAME` is unset), so a caller
//!   can tell the backends apart.
//!
//! Every response carries `x-echo-version` (the HTTP version the request arrived with).
//! Exits 0 on `SIGTERM` or `SIGINT`.

use std::convert::Infallible;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = BoxBody<Bytes, hyper::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT")
        .map_err(|_| anyhow::anyhow!("PORT is not set"))?
        .parse()?;
    // The simulator sets BIND_ADDRESS to the pod's test-host address.
    let ip: std::net::IpAddr = std::env::var("BIND_ADDRESS")
        .unwrap_or_else(|_| "127.0.0.1".to_owned())
        .parse()?;
    let name: &'static str = Box::leak(
        std::env::var("ECHO_NAME")
            .unwrap_or_else(|_| std::net::SocketAddr::new(ip, port).to_string())
            .into_boxed_str(),
    );
    let listener = TcpListener::bind((ip, port)).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, name));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

async fn handle(req: Request<Incoming>, name: &'static str) -> Result<Response<Body>, Infallible> {
    let version = format!("{:?}", req.version());
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let mut response = if req.uri().path() == "/healthz" {
        full(StatusCode::OK, "ok")
    } else if grpc {
        grpc_echo(req)
    } else if req.uri().path() == "/ws" {
        websocket(req)
    } else {
        full(StatusCode::OK, format!("echo {name}"))
    };
    if let Ok(value) = HeaderValue::from_str(&version) {
        response.headers_mut().insert("x-echo-version", value);
    }
    Ok(response)
}

fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return full(StatusCode::BAD_REQUEST, "not a websocket handshake");
    };
    if !upgrade {
        return full(StatusCode::BAD_REQUEST, "not a websocket handshake");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                return;
            }
        }
    });
    let mut response = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

fn grpc_trailers(status: &'static str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(status));
    trailers
}

fn grpc_echo(req: Request<Incoming>) -> Response<Body> {
    let status = if req.version() == Version::HTTP_2 {
        "0"
    } else {
        "12"
    };
    let ok = status == "0";
    // Request data frames are sent back as they come (the messages stay length-prefixed),
    // then the trailers.
    let frames = futures::stream::unfold(
        (Some(req.into_body()), false),
        move |(body, done)| async move {
            if done {
                return None;
            }
            let Some(mut body) = body else {
                return Some((Ok(Frame::trailers(grpc_trailers(status))), (None, true)));
            };
            if !ok {
                return Some((Ok(Frame::trailers(grpc_trailers(status))), (None, true)));
            }
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => return Some((Ok(Frame::data(data)), (Some(body), false))),
                        Err(_trailers) => continue,
                    },
                    Some(Err(error)) => return Some((Err(error), (None, true))),
                    None => {
                        return Some((Ok(Frame::trailers(grpc_trailers(status))), (None, true)));
                    }
                }
            }
        },
    );
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}
