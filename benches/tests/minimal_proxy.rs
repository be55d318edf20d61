//! The minimal hyper proxy peer forwards like a reverse proxy: by Host, with the client's
//! address appended to X-Forwarded-For, over a kept-alive upstream connection; unknown hosts
//! get 404 and an unreachable backend 502.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keda_http_benches::minimal_proxy;

/// A backend that echoes Host and X-Forwarded-For and counts its connections.
async fn echo_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    let body = format!(
                        "{} {} {}",
                        header("host"),
                        header("x-forwarded-for"),
                        req.uri()
                    );
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

async fn get(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<Bytes>,
    >,
    proxy: SocketAddr,
    host: &str,
    extra: Option<(&str, &str)>,
) -> (u16, String) {
    let mut req = http::Request::get(format!("http://{proxy}/path?q=1")).header("host", host);
    if let Some((k, v)) = extra {
        req = req.header(k, v);
    }
    let resp = client
        .request(req.body(Empty::new()).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_by_host_with_x_forwarded_for_over_one_kept_alive_connection() {
    let run = async {
        let (backend, connections) = echo_backend().await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let proxy = listener.local_addr().expect("addr");
        let routes = [
            ("app.example.com".to_owned(), backend),
            ("gone.example.com".to_owned(), dead),
        ]
        .into_iter()
        .collect();
        let server = tokio::spawn(minimal_proxy::serve(listener, routes));
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Empty<Bytes>>();

        let (status, body) = get(&client, proxy, "App.Example.com:8080", None).await;
        assert_eq!(status, 200);
        assert_eq!(body, "App.Example.com:8080 127.0.0.1 /path?q=1");
        let (status, body) = get(
            &client,
            proxy,
            "app.example.com",
            Some(("x-forwarded-for", "10.0.0.1")),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body, "app.example.com 10.0.0.1, 127.0.0.1 /path?q=1");
        // Sequential requests reuse the upstream connection.
        assert_eq!(connections.load(Ordering::SeqCst), 1);

        assert_eq!(get(&client, proxy, "other.example.com", None).await.0, 404);
        assert_eq!(get(&client, proxy, "gone.example.com", None).await.0, 502);
        server.abort();
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("finishes within 30 s");
}
