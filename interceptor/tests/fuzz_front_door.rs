//! Randomized test of the front door: valid HTTP/1.1 requests are mutated (framing headers,
//! chunked bodies, header bytes, line endings, upgrade headers) and sent to the real proxy
//! listener on 127.0.0.1, in front of a backend that records every request it received in full.
//!
//! Asserted for every case: nothing panics, the answer is a well-formed response or a close
//! (or nothing yet, for a request still incomplete), a request whose framing is known to be
//! invalid never reaches the backend as a complete request, and no `Upgrade` other than
//! WebSocket (nor `HTTP2-Settings`) reaches the backend.
//!
//! `FUZZ_CASES` sets the number of cases (default 200, a few seconds); `FUZZ_SEED` replays a
//! run (the seed is printed on failure), e.g. `FUZZ_CASES=20000 cargo test -p
//! keda-http-interceptor --test fuzz_front_door`.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Panics anywhere in the process (the interceptor's tasks included).
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// A small deterministic generator (xorshift64*): a failing run replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// One generated request: its bytes, and whether its framing is known to be invalid.
struct Case {
    id: usize,
    bytes: Vec<u8>,
    invalid_framing: bool,
}

/// What the backend saw.
#[derive(Default)]
struct Seen {
    /// Markers (`case-N`) of requests received with a complete body.
    complete: HashSet<String>,
    /// Upgrade headers that should never have come through.
    forbidden_upgrades: Vec<String>,
}

async fn recording_backend(seen: Arc<Mutex<Seen>>) -> SocketAddr {
    backend(move |req: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let upgrade = req
                .headers()
                .get_all(http::header::UPGRADE)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
                .filter(|v| v.trim() != "websocket")
                .chain(
                    req.headers()
                        .get("http2-settings")
                        .map(|_| "http2-settings".to_owned()),
                )
                .collect::<Vec<_>>();
            let marker = req
                .uri()
                .path()
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("")
                .to_owned();
            let complete = req.into_body().collect().await.is_ok();
            if let Ok(mut seen) = seen.lock() {
                seen.forbidden_upgrades.extend(upgrade);
                if complete {
                    seen.complete.insert(marker);
                }
            }
            Response::new(full("ok"))
        }
    })
    .await
}

/// A valid request for case `id`, then mutated.
fn generate(rng: &mut Rng, id: usize) -> Case {
    let marker = format!("case-{id}");
    let mut invalid_framing = false;
    let mut head: Vec<String> = vec![
        format!("POST /{marker}/x HTTP/1.1"),
        "Host: app".to_owned(),
        "User-Agent: fuzz".to_owned(),
    ];
    let payload = "hello world";
    let mut body = String::new();
    match rng.below(4) {
        // Content-Length body.
        0 => {
            head.push(format!("Content-Length: {}", payload.len()));
            body.push_str(payload);
        }
        // Chunked body, maybe with extensions and trailers.
        1 | 2 => {
            head.push("Transfer-Encoding: chunked".to_owned());
            let mut chunks: Vec<String> = vec![
                format!("5{}\r\nhello\r\n", rng.pick(&["", ";a=b", ";x"])),
                "6\r\n world\r\n".to_owned(),
            ];
            match rng.below(6) {
                0 => {
                    // An impossible chunk size.
                    chunks[rng.below(2)] = format!(
                        "{}\r\nhello\r\n",
                        rng.pick(&["zz", "-5", "0x5", "fffffffffffffffffffff", " ", "5 5"])
                    );
                    invalid_framing = true;
                }
                1 => {
                    // A chunk extension far over any sane bound.
                    chunks[0] = format!("5;{}\r\nhello\r\n", "e".repeat(70_000));
                    invalid_framing = true;
                }
                2 => {
                    // Truncated: no last chunk.
                    chunks.truncate(1);
                    invalid_framing = true;
                    body.push_str(&chunks.concat());
                    return finish(rng, id, head, body, invalid_framing, false);
                }
                _ => {}
            }
            body.push_str(&chunks.concat());
            body.push_str(rng.pick(&["0\r\n\r\n", "0\r\nX-Trailer: t\r\n\r\n"]));
        }
        // No body.
        _ => head[0] = format!("GET /{marker}/x HTTP/1.1"),
    }
    // Framing headers.
    match rng.below(8) {
        0 => {
            head.push(format!("Content-Length: {}", rng.below(40)));
            if head.iter().any(|l| l.starts_with("Transfer-Encoding")) {
                invalid_framing = true;
            } else if head
                .iter()
                .filter(|l| l.starts_with("Content-Length"))
                .count()
                > 1
            {
                // Two Content-Length values (maybe equal; counted invalid only if they differ).
                let values: HashSet<&String> = head
                    .iter()
                    .filter(|l| l.starts_with("Content-Length"))
                    .collect();
                invalid_framing |= values.len() > 1;
            }
        }
        1 if head.iter().any(|l| l.starts_with("Content-Length")) => {
            head.push("Transfer-Encoding: chunked".to_owned());
            invalid_framing = true;
        }
        _ => {}
    }
    finish(rng, id, head, body, invalid_framing, true)
}

fn finish(
    rng: &mut Rng,
    id: usize,
    mut head: Vec<String>,
    body: String,
    invalid_framing: bool,
    mutate_bytes: bool,
) -> Case {
    // Upgrade headers.
    match rng.below(5) {
        0 => {
            head.push("Connection: Upgrade, HTTP2-Settings".to_owned());
            head.push("Upgrade: h2c".to_owned());
            head.push("HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA".to_owned());
        }
        1 => {
            head.push("Connection: Upgrade".to_owned());
            head.push(format!(
                "Upgrade: {}",
                rng.pick(&["websocket", "h2c", "foo/1", "websocket, h2c", "H2C"])
            ));
        }
        _ => {}
    }
    let newline = if rng.below(8) == 0 { "\n" } else { "\r\n" };
    let mut text = head.join(newline);
    text.push_str(newline);
    text.push_str(newline);
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    if mutate_bytes && rng.below(3) == 0 {
        // Byte-level mutations; the framing they leave is unknown, so only the generic
        // invariants apply to these cases.
        for _ in 0..=rng.below(3) {
            let at = rng.below(bytes.len().max(1));
            match rng.below(4) {
                0 => bytes[at] = rng.next().to_le_bytes()[0],
                1 => bytes.insert(at, b"\r\n :\t\0\x7f"[rng.below(7)]),
                2 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at.max(1)),
            }
        }
        return Case {
            id,
            bytes,
            invalid_framing: false,
        };
    }
    Case {
        id,
        bytes,
        invalid_framing,
    }
}

/// What came back for one case.
enum Answer {
    /// Nothing, then a close.
    Closed,
    /// Nothing yet (an incomplete request the interceptor still waits on).
    Waiting,
    /// Bytes starting with a complete response head.
    Response,
    /// Anything else.
    Malformed(String),
}

async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return Answer::Malformed("connect failed".to_owned());
    };
    // The interceptor may answer (and close) before reading everything.
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    if out.is_empty() {
        return if closed {
            Answer::Closed
        } else {
            Answer::Waiting
        };
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let well_formed = text.find("\r\n\r\n").is_some_and(|end| {
        let status_line = text[..end].lines().next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        matches!(parts.next(), Some("HTTP/1.1" | "HTTP/1.0"))
            && parts
                .next()
                .and_then(|code| code.parse::<u16>().ok())
                .and_then(|code| StatusCode::from_u16(code).ok())
                .is_some()
    });
    if well_formed {
        Answer::Response
    } else {
        Answer::Malformed(text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_panic_nor_pass_bad_framing() {
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d_u64)
        .max(1);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    // Scaled with the number of cases: each case takes at most about a second.
    let budget = TEST_TIMEOUT + Duration::from_millis(100) * u32::try_from(cases).unwrap_or(0);
    tokio::time::timeout(budget, async {
        let h = Harness::start(|_| {}).await;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let addr = recording_backend(seen.clone()).await;
        h.set_endpoints("ns", "app", 80, http1(&[addr]));
        h.install(vec![route("ns", "app", &["app"], &[])]).await;

        let mut rng = Rng(seed);
        let generated: Vec<Case> = (0..cases).map(|id| generate(&mut rng, id)).collect();
        let invalid: Vec<usize> = generated
            .iter()
            .filter(|c| c.invalid_framing)
            .map(|c| c.id)
            .collect();
        let proxy = h.addrs.proxy;
        let answers: Vec<(usize, Answer)> = futures::stream::iter(generated)
            .map(|case| async move { (case.id, exchange(proxy, &case.bytes).await) })
            .buffer_unordered(16)
            .collect()
            .await;

        for (id, answer) in &answers {
            if let Answer::Malformed(text) = answer {
                panic!("seed {seed}, case {id}: malformed answer {text:?}");
            }
        }
        // The interceptor still serves.
        let (status, _, _) = get(&h.proxy_url("/after/x"), "app").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "seed {seed}: not serving after the cases"
        );
        {
            let seen = seen.lock().expect("lock");
            for id in &invalid {
                assert!(
                    !seen.complete.contains(&format!("case-{id}")),
                    "seed {seed}, case {id}: invalid framing reached the backend complete"
                );
            }
            assert!(
                seen.forbidden_upgrades.is_empty(),
                "seed {seed}: the backend saw {:?}",
                seen.forbidden_upgrades
            );
            // Not vacuous: valid requests did get through.
            assert!(
                !seen.complete.is_empty(),
                "seed {seed}: nothing reached the backend"
            );
        }
        let responses = answers
            .iter()
            .filter(|(_, a)| matches!(a, Answer::Response))
            .count();
        assert!(responses > 0, "seed {seed}: no case was answered");
        eprintln!(
            "{cases} cases (seed {seed}): {responses} answered, {} with invalid framing",
            invalid.len()
        );
        h.stop().await;
    })
    .await
    .unwrap_or_else(|_| panic!("seed {seed}: timed out"));
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "seed {seed}: a task panicked"
    );
}
