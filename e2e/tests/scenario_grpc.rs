//! gRPC through a cold start (compat §11.1 `grpc_test.go`): the backend's Service port has
//! `appProtocol: kubernetes.io/h2c`, so the interceptor speaks HTTP/2 with prior knowledge to
//! it. The client speaks h2c to the interceptor proxy. The backend (`e2e-echo`) echoes gRPC
//! messages as they arrive and ends with `grpc-status: 0`; over HTTP/1.1 it would answer
//! `grpc-status: 12`, so a passing call proves h2c end to end.
//!
//! - a unary call at zero replicas answers (the app scales 0 → 1);
//! - a bidirectional stream: each message is echoed before the next is sent;
//! - back to 0 after the cooldown.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Body = StreamBody<ReceiverStream<Result<Frame<Bytes>, Never>>>;

/// One length-prefixed gRPC message.
fn message(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(payload.len()).unwrap());
    buf.put_slice(payload);
    buf.freeze()
}

/// Reads whole messages from `body` into `pending` until one is complete.
async fn next_message(body: &mut hyper::body::Incoming, pending: &mut BytesMut) -> Option<Bytes> {
    loop {
        if pending.len() >= 5 {
            let len = u32::from_be_bytes(pending[1..5].try_into().unwrap()) as usize;
            if pending.len() >= 5 + len {
                let msg = pending.split_to(5 + len);
                return Some(msg.freeze().slice(5..));
            }
        }
        let frame = body.frame().await?.unwrap();
        if let Ok(data) = frame.into_data() {
            pending.extend_from_slice(&data);
        } else {
            return None;
        }
    }
}

async fn connect(h: &keda_http_e2e::harness::Harness) -> http2::SendRequest<Body> {
    let stream = tokio::net::TcpStream::connect(h.proxy_addr())
        .await
        .unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn call(method: &str, body: Body) -> Request<Body> {
    Request::post(format!("http://grpc.test/echo.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_grpc_through_a_cold_start() {
    let Some(h) = start(|_| {}).await else {
        return;
    };
    let sets = ["hosts={grpc.test}", "image.repository=e2e-echo"];
    let Some(yaml) = hello_chart("echo", "grpc", &sets) else {
        return;
    };
    let mut d = docs(&yaml);
    doc_mut(&mut d, "Service")["spec"]["ports"][0]["appProtocol"] = json!("kubernetes.io/h2c");
    namespace(&h, "grpc").await;
    apply_docs(&h, d, "grpc").await;
    wait_route(&h, "grpc/echo", |r| {
        r.is_some_and(|r| r["appProtocol"].to_string().to_lowercase().contains("h2c"))
    })
    .await;
    wait_replicas(&h, "grpc", "echo", 0).await;

    // Unary, at zero replicas.
    let mut sender = connect(&h).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(Ok(Frame::data(message(b"ping")))).await.unwrap();
    drop(tx);
    let response = within(
        "the unary call",
        sender.send_request(call("Unary", StreamBody::new(ReceiverStream::new(rx)))),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-echo-version"], "HTTP/2.0");
    let mut body = response.into_body();
    let mut pending = BytesMut::new();
    assert_eq!(
        next_message(&mut body, &mut pending).await.unwrap(),
        &b"ping"[..]
    );
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        if let Ok(t) = frame.unwrap().into_trailers() {
            trailers = Some(t);
        }
    }
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    assert_eq!(replicas(&h, "grpc", "echo").await.0, 1);

    // Bidirectional stream: one message at a time, each answered before the next.
    let (tx, rx) = mpsc::channel(4);
    tx.send(Ok(Frame::data(message(b"one")))).await.unwrap();
    let response = within(
        "the stream's headers",
        sender.send_request(call("Stream", StreamBody::new(ReceiverStream::new(rx)))),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut pending = BytesMut::new();
    for payload in [&b"one"[..], b"two", b"three"] {
        if payload != b"one" {
            tx.send(Ok(Frame::data(message(payload)))).await.unwrap();
        }
        let echoed = within("an echoed message", next_message(&mut body, &mut pending)).await;
        assert_eq!(echoed.unwrap(), payload);
    }
    drop(tx);
    let mut status = None;
    while let Some(frame) = within("the trailers", body.frame()).await {
        if let Ok(t) = frame.unwrap().into_trailers() {
            status = t.get("grpc-status").cloned();
        }
    }
    assert_eq!(status.unwrap(), "0");
    drop(sender);
    wait_replicas(&h, "grpc", "echo", 0).await;
    h.stop().await;
}
