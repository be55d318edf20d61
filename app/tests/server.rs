//! The hello server over real sockets on 127.0.0.1: routes, the delay cap, graceful shutdown.

use std::net::SocketAddr;

use hello::server::{DELAY_HEADER, HELLO, SSE_EVENTS};
use hello::{Config, Server, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// A running server and the means to stop it.
struct Running {
    addr: SocketAddr,
    state: watch::Receiver<State>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), hello::Error>>,
}

impl Running {
    async fn start(config: Config) -> Self {
        let server = Server::bind(&config).await.expect("bind");
        let addr = server.local_addr();
        let state = server.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            state,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("join").expect("server run");
    }
}

/// A parsed HTTP/1.1 response (the server closes the connection after it).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn request(addr: SocketAddr, method: &str, target: &str, body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    send(&mut stream, method, target, body).await;
    read_reply(&mut stream).await
}

async fn send(stream: &mut TcpStream, method: &str, target: &str, body: &str) {
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: hello.test\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body.as_bytes()).await.expect("write body");
}

async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head/body split");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        raw = &rest[size + 2..];
    }
    out
}

#[tokio::test]
async fn root_and_unknown_paths_say_hello() {
    let server = Running::start(Config::local()).await;
    for path in ["/", "/anything/else?x=1"] {
        let reply = request(server.addr, "GET", path, "").await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body, HELLO, "{path}");
        assert_eq!(reply.header(DELAY_HEADER), Some("0"));
    }
    let reply = request(server.addr, "POST", "/", r#"{"a":1}"#).await;
    assert_eq!(reply.body, HELLO);
    server.shutdown().await;
}

#[tokio::test]
async fn healthz_is_ok_and_never_delayed() {
    let config = Config {
        delay_ms: 60_000,
        max_delay_ms: 60_000,
        ..Config::local()
    };
    let server = Running::start(config).await;
    let reply = request(server.addr, "GET", "/healthz", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "ok");
    assert_eq!(reply.header(DELAY_HEADER), None);
    server.shutdown().await;
}

#[tokio::test]
async fn query_delay_is_applied_and_reported() {
    let server = Running::start(Config::local()).await;
    let reply = request(server.addr, "GET", "/?delay_ms=5", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, HELLO);
    assert_eq!(reply.header(DELAY_HEADER), Some("5"));
    server.shutdown().await;
}

#[tokio::test]
async fn delay_above_the_cap_is_cut_to_the_cap() {
    let config = Config {
        delay_ms: 1_000_000,
        max_delay_ms: 3,
        ..Config::local()
    };
    let server = Running::start(config).await;
    // From DELAY_MS.
    let reply = request(server.addr, "GET", "/", "").await;
    assert_eq!(reply.header(DELAY_HEADER), Some("3"));
    // From the query.
    let reply = request(server.addr, "GET", "/?delay_ms=999999999", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header(DELAY_HEADER), Some("3"));
    // Below the cap: as asked.
    let reply = request(server.addr, "GET", "/?delay_ms=1", "").await;
    assert_eq!(reply.header(DELAY_HEADER), Some("1"));
    server.shutdown().await;
}

#[tokio::test]
async fn bad_delay_is_a_400() {
    let server = Running::start(Config::local()).await;
    let reply = request(server.addr, "GET", "/?delay_ms=soon", "").await;
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("delay_ms"), "{}", reply.body);
    server.shutdown().await;
}

#[tokio::test]
async fn echo_returns_the_body() {
    let server = Running::start(Config::local()).await;
    let payload = r#"{"hello":"keda","n":[1,2,3]}"#;
    let reply = request(server.addr, "POST", "/echo", payload).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, payload);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    server.shutdown().await;
}

#[tokio::test]
async fn sse_sends_every_event() {
    let server = Running::start(Config::local()).await;
    let reply = request(server.addr, "GET", "/sse", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let events = reply.body.matches("data: ").count();
    assert_eq!(events, usize::try_from(SSE_EVENTS).expect("small"));
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    // Long enough that the request is certainly still sleeping when shutdown starts; the
    // test never waits on time, only on the server's published state.
    let server = Running::start(Config::local()).await;
    let mut state = server.state.clone();
    let addr = server.addr;
    let in_flight = tokio::spawn(async move { request(addr, "GET", "/?delay_ms=300", "").await });

    state
        .wait_for(|s| s.in_flight == 1)
        .await
        .expect("request arrives");
    let Running { stop, task, .. } = server;
    stop.expect("not stopped yet")
        .send(())
        .expect("server alive");
    state
        .wait_for(|s| !s.accepting)
        .await
        .expect("server stops accepting");

    // A new connection is refused while the old request is still being served.
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");

    let reply = in_flight.await.expect("client task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, HELLO);
    assert_eq!(reply.header(DELAY_HEADER), Some("300"));
    task.await.expect("join").expect("server exits cleanly");
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let server = Running::start(Config::local()).await;
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let driver = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/?delay_ms=2", server.addr))
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[DELAY_HEADER], "2");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, HELLO.as_bytes());
    drop(sender);
    let _ = driver.await;
    server.shutdown().await;
}

#[tokio::test]
async fn not_ready_fails_healthz_but_keeps_serving() {
    let server = Server::bind(&Config::local()).await.expect("bind");
    let addr = server.local_addr();
    let readiness = server.readiness();
    let mut state = server.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    assert_eq!(request(addr, "GET", "/healthz", "").await.status, 200);
    readiness.set(false);
    state.wait_for(|s| !s.ready).await.expect("not ready");
    let health = request(addr, "GET", "/healthz", "").await;
    assert_eq!(health.status, 503);
    let hello = request(addr, "GET", "/", "").await;
    assert_eq!((hello.status, hello.body.as_str()), (200, HELLO));
    readiness.set(true);
    assert_eq!(request(addr, "GET", "/healthz", "").await.status, 200);

    stop.send(()).expect("server alive");
    task.await.expect("join").expect("server exits cleanly");
}
