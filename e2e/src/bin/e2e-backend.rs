//! `e2e-backend`: the smallest workload for the simulator's own tests, so they do not depend on
//! the `hello` app's build. Listens on `$BIND_ADDRESS:$PORT` (default 127.0.0.1) (HTTP/1.1):
//!
//! - `GET /healthz`: `200 ok` (the readiness path);
//! - `GET /crash`: exits with status 1 at once (a pod dying);
//! - anything else: `200 <address>:<PORT>`, so a caller can tell the pods apart.
//!
//! Exits 0 on `SIGTERM` or `SIGINT`.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT")
        .map_err(|_| anyhow::anyhow!("PORT is not set"))?
        .parse()?;
    // The simulator sets BIND_ADDRESS to the pod's test-host address.
    let ip: std::net::IpAddr = std::env::var("BIND_ADDRESS")
        .unwrap_or_else(|_| "127.0.0.1".to_owned())
        .parse()?;
    let listener = TcpListener::bind((ip, port)).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, ip, port));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    ip: std::net::IpAddr,
    port: u16,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.uri().path() {
        "/healthz" => "ok".to_owned(),
        "/crash" => std::process::exit(1),
        _ => std::net::SocketAddr::new(ip, port).to_string(),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}
