//! The accept loop serves HTTP/1.1 and h2c on one port and stops on its tokens.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use keda_http_runtime::serve::{Limits, bind, builder, serve};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn answers_http1_then_stops_gracefully() {
    let (listener, addr) = bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let stop = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        builder(Limits::default()),
        None,
        |req: http::Request<hyper::body::Incoming>, peer: std::net::SocketAddr| async move {
            let body = format!("{} from {}", req.uri().path(), peer.ip());
            Response::new(Full::new(Bytes::from(body)))
        },
        stop.clone(),
        hard_stop.clone(),
    ));

    let mut client = TcpStream::connect(addr).await.expect("connect");
    client
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    tokio::time::timeout(BOUND, client.read_to_string(&mut response))
        .await
        .expect("bounded")
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("/hello from 127.0.0.1"), "{response}");

    stop.cancel();
    tokio::time::timeout(BOUND, server)
        .await
        .expect("serve returns after stop")
        .expect("no panic");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn hard_stop_drops_idle_connections() {
    let (listener, addr) = bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let stop = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        builder(Limits::default()),
        None,
        |_req: http::Request<hyper::body::Incoming>, _peer| async move {
            Response::new(Full::new(Bytes::from_static(b"ok")))
        },
        stop.clone(),
        hard_stop.clone(),
    ));
    // A connection that sends half a request keeps the graceful stop waiting.
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    tokio::task::yield_now().await;
    stop.cancel();
    hard_stop.cancel();
    tokio::time::timeout(BOUND, server)
        .await
        .expect("serve returns after hard stop")
        .expect("no panic");
}
