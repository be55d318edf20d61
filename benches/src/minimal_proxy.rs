//! A minimal hyper/hyper-util reverse proxy: the in-run peer that shows what forwarding costs
//! with nothing but the libraries our interceptor is built on. It routes by `Host` (port
//! ignored) to a fixed backend, appends the client's address to `X-Forwarded-For`, and
//! forwards over a keep-alive pool (hyper-util's legacy client); no retries, no counting, no
//! cold start. An unknown host gets 404, a backend that cannot be reached 502.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The response body: the backend's, or empty for the proxy's own errors.
type Body = Either<Incoming, Empty<Bytes>>;
type Pool = Client<HttpConnector, Incoming>;

/// Host (lower case, without port) → backend.
pub type Routes = HashMap<String, SocketAddr>;

/// Serves `listener` until the task is dropped or accepting fails.
pub async fn serve(listener: TcpListener, routes: Routes) -> std::io::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let pool: Pool = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector);
    let routes = Arc::new(routes);
    loop {
        let (stream, client) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (pool, routes) = (pool.clone(), Arc::clone(&routes));
        tokio::spawn(async move {
            let service =
                service_fn(move |req| forward(pool.clone(), Arc::clone(&routes), client, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    pool: Pool,
    routes: Arc<Routes>,
    client: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
    let Some(backend) = host.and_then(|h| routes.get(&h).copied()) else {
        return Ok(status(StatusCode::NOT_FOUND));
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("http://{backend}{path}").parse::<Uri>() else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    *req.uri_mut() = uri;
    let forwarded = match req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => format!("{prior}, {}", client.ip()),
        None => client.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        req.headers_mut().insert("x-forwarded-for", value);
    }
    Ok(match pool.request(req).await {
        Ok(resp) => resp.map(Either::Left),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    })
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Empty::new()));
    *resp.status_mut() = code;
    resp
}
