//! Idle HTTP/1.1 keep-alive connections are parked between requests (hyper's state dropped,
//! the socket kept) and served again when the client writes; parked connections close on
//! the header-read timeout and on a graceful stop.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use keda_http_runtime::serve::{Limits, Park, Stream, bind, builder, serve_connections};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(10);

/// A test connection for bodiless requests: between requests when what it read so far
/// ends a header section; counts how often the server waited on it parked.
struct Probe {
    inner: Stream,
    tail: [u8; 4],
    parked: Arc<AtomicUsize>,
}

impl Park for Probe {
    const PARKS: bool = true;

    fn between_requests(&self) -> bool {
        &self.tail == b"\r\n\r\n"
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.parked.fetch_add(1, Ordering::Relaxed);
        self.inner.poll_read_ready(cx)
    }
}

impl AsyncRead for Probe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        for &b in &buf.filled()[before..] {
            self.tail.rotate_left(1);
            self.tail[3] = b;
        }
        polled
    }
}

impl AsyncWrite for Probe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Server {
    addr: SocketAddr,
    parked: Arc<AtomicUsize>,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    task: JoinHandle<()>,
}

/// A server answering each request with its path and the client's port.
async fn start(header_read_timeout: Duration) -> Server {
    let (listener, addr) = bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let parked = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    let counter = Arc::clone(&parked);
    let connect = move |stream: Stream, peer: SocketAddr| {
        let io = Probe {
            inner: stream,
            tail: [0; 4],
            parked: Arc::clone(&counter),
        };
        let service = service_fn(move |req: Request<Incoming>| async move {
            let body = format!("{} {}", req.uri().path(), peer.port());
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
        });
        (io, service)
    };
    let limits = Limits {
        header_read_timeout,
        ..Limits::default()
    };
    let task = tokio::spawn(serve_connections(
        listener,
        builder(limits),
        None,
        connect,
        stop.clone(),
        hard_stop.clone(),
    ));
    Server {
        addr,
        parked,
        stop,
        hard_stop,
        task,
    }
}

/// Reads one response with a Content-Length body; returns its body.
async fn read_response(client: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        loop {
            let n = client.read(&mut byte).await.expect("read");
            assert!(n > 0, "connection closed mid-response: {data:?}");
            data.push(byte[0]);
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .expect("content-length")
                    .trim()
                    .parse()
                    .expect("length");
                let mut body = vec![0u8; len];
                client.read_exact(&mut body).await.expect("body");
                return String::from_utf8(body).expect("utf-8");
            }
        }
    };
    tokio::time::timeout(BOUND, read).await.expect("bounded")
}

async fn wait_parked(server: &Server, at_least: usize) {
    tokio::time::timeout(BOUND, async {
        while server.parked.load(Ordering::Relaxed) < at_least {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the connection parks");
}

async fn expect_closed(client: &mut TcpStream) {
    let mut rest = Vec::new();
    let n = tokio::time::timeout(BOUND, client.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing more is sent: {rest:?}");
}

#[tokio::test]
async fn idle_connection_parks_and_serves_the_next_request() {
    let server = start(Duration::from_secs(30)).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    let port = client.local_addr().expect("addr").port();
    for (i, path) in ["/one", "/two", "/three"].iter().enumerate() {
        client
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(read_response(&mut client).await, format!("{path} {port}"));
        // After each response the idle connection is parked again, and the next request
        // on the same socket is served by a new hyper connection.
        wait_parked(&server, i + 1).await;
    }
    server.stop.cancel();
    expect_closed(&mut client).await;
    tokio::time::timeout(BOUND, server.task)
        .await
        .expect("a stop closes parked connections at once")
        .expect("no panic");
}

#[tokio::test]
async fn pipelined_requests_are_all_answered() {
    let server = start(Duration::from_secs(30)).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    let port = client.local_addr().expect("addr").port();
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(read_response(&mut client).await, format!("/a {port}"));
    assert_eq!(read_response(&mut client).await, format!("/b {port}"));
    // A request split over writes with a pause in the head is not lost either.
    client
        .write_all(b"GET /c HTTP/1.1\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.write_all(b"Host: x\r\n\r\n").await.expect("write");
    assert_eq!(read_response(&mut client).await, format!("/c {port}"));
    server.hard_stop.cancel();
    server.stop.cancel();
}

#[tokio::test]
async fn parked_connection_closes_after_the_header_read_timeout() {
    let server = start(Duration::from_millis(300)).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    read_response(&mut client).await;
    wait_parked(&server, 1).await;
    expect_closed(&mut client).await;
    // A connection that never sends a byte is closed the same way.
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    expect_closed(&mut silent).await;
    server.stop.cancel();
    server.hard_stop.cancel();
}
