//! Detects HTTP/1 requests that carry both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper accepts such a request (Transfer-Encoding wins, Content-Length is dropped from the
//! headers and the connection is closed after the response), so the handler cannot see it.
//! We refuse them outright (400, nothing forwarded), as request-smuggling hardening: an
//! intermediary in front of us may have framed the message by its Content-Length.
//!
//! [`SniffIo`] wraps a connection and follows the inbound byte stream with a small
//! allocation-free HTTP/1 framing scanner: header sections are scanned line by line for the
//! two framing fields, bodies are skipped by their length or chunk sizes. It stops scanning
//! for good at an HTTP/2 preface, an `Upgrade` request, `CONNECT`, or anything it does not
//! understand (hyper rejects malformed input itself). Each complete request head gets an
//! index; [`ConnFraming::next_request_is_ambiguous`], called once per request in order, tells
//! the service whether the request it is handling was ambiguous.
//!
//! The same scan tells the accept loop when every byte read belongs to complete requests
//! (`keda_http_runtime::serve::Park`): only then may an idle connection drop hyper's state.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use keda_http_runtime::serve::{Park, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const NONE: u64 = u64::MAX;

/// Per-connection framing findings shared between the IO wrapper and the service.
#[derive(Debug)]
pub struct ConnFraming {
    heads: AtomicU64,
    first_ambiguous: AtomicU64,
    requests: AtomicU64,
}

impl Default for ConnFraming {
    fn default() -> Self {
        Self {
            heads: AtomicU64::new(0),
            first_ambiguous: AtomicU64::new(NONE),
            requests: AtomicU64::new(0),
        }
    }
}

impl ConnFraming {
    /// Called once per request, in order: whether this request's head was ambiguous.
    pub fn next_request_is_ambiguous(&self) -> bool {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        self.first_ambiguous.load(Ordering::Acquire) == index
    }
}

/// Marker extension on a request whose head had both framing headers.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousFraming;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Other,
    ContentLength,
    TransferEncoding,
    Upgrade,
}

const NAME_CAP: usize = 18;

#[derive(Debug, Clone, Copy)]
struct Head {
    first_line: bool,
    line_len: usize,
    name: [u8; NAME_CAP],
    name_len: usize,
    colon: bool,
    value: Option<u64>,
    value_ok: bool,
    content_length: Option<u64>,
    transfer_encoding: bool,
    upgrade: bool,
}

impl Head {
    fn new() -> Self {
        Self {
            first_line: true,
            line_len: 0,
            name: [0; NAME_CAP],
            name_len: 0,
            colon: false,
            value: None,
            value_ok: true,
            content_length: None,
            transfer_encoding: false,
            upgrade: false,
        }
    }

    fn field(&self) -> Field {
        if self.name_len > NAME_CAP {
            return Field::Other;
        }
        let name = &self.name[..self.name_len];
        if name.eq_ignore_ascii_case(b"content-length") {
            Field::ContentLength
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            Field::TransferEncoding
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            Field::Upgrade
        } else {
            Field::Other
        }
    }

    fn reset_line(&mut self) {
        self.line_len = 0;
        self.name_len = 0;
        self.colon = false;
        self.value = None;
        self.value_ok = true;
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head(Head),
    Fixed(u64),
    ChunkSize { size: u64, in_ext: bool },
    ChunkData(u64),
    ChunkEnd(u8),
    Trailers { line_len: usize },
    Stop,
}

/// The scanner.
#[derive(Debug)]
struct Scanner {
    state: State,
    framing: Arc<ConnFraming>,
}

impl Scanner {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Stop => return,
                State::Fixed(remaining) => {
                    let n = (*remaining).min(bytes.len() as u64);
                    *remaining -= n;
                    // n ≤ bytes.len(), so the cast is lossless.
                    bytes = &bytes[usize::try_from(n).unwrap_or(bytes.len())..];
                    if *remaining == 0 {
                        self.state = State::Head(Head::new());
                    }
                }
                State::ChunkData(remaining) => {
                    let n = (*remaining).min(bytes.len() as u64);
                    *remaining -= n;
                    bytes = &bytes[usize::try_from(n).unwrap_or(bytes.len())..];
                    if *remaining == 0 {
                        self.state = State::ChunkEnd(2);
                    }
                }
                State::ChunkEnd(left) => {
                    *left -= 1;
                    bytes = &bytes[1..];
                    if *left == 0 {
                        self.state = State::ChunkSize {
                            size: 0,
                            in_ext: false,
                        };
                    }
                }
                State::ChunkSize { size, in_ext } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    match b {
                        b'\n' => {
                            self.state = if *size == 0 {
                                State::Trailers { line_len: 0 }
                            } else {
                                State::ChunkData(*size)
                            };
                        }
                        b'\r' => {}
                        b';' => *in_ext = true,
                        _ if *in_ext => {}
                        _ => match (b as char).to_digit(16) {
                            Some(d) => match size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(u64::from(d)))
                            {
                                Some(s) => *size = s,
                                None => self.state = State::Stop,
                            },
                            None if b == b' ' || b == b'\t' => {}
                            None => self.state = State::Stop,
                        },
                    }
                }
                State::Trailers { line_len } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    match b {
                        b'\n' if *line_len == 0 => self.state = State::Head(Head::new()),
                        b'\n' => *line_len = 0,
                        b'\r' => {}
                        _ => *line_len += 1,
                    }
                }
                State::Head(head) => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if let Some(next) = Self::head_byte(head, b, &self.framing) {
                        self.state = next;
                    }
                }
            }
        }
    }

    fn head_byte(head: &mut Head, b: u8, framing: &ConnFraming) -> Option<State> {
        match b {
            b'\r' => None,
            b'\n' => {
                if head.first_line {
                    if head.line_len == 0 {
                        return None; // tolerated empty line before a request
                    }
                    let start = &head.name[..head.name_len.min(NAME_CAP)];
                    if start.starts_with(b"PRI ") || start.starts_with(b"CONNECT ") {
                        return Some(State::Stop);
                    }
                    head.first_line = false;
                    head.reset_line();
                    return None;
                }
                if head.line_len == 0 {
                    // End of the header section.
                    let index = framing.heads.fetch_add(1, Ordering::Relaxed);
                    if head.transfer_encoding && head.content_length.is_some() {
                        let _ = framing.first_ambiguous.compare_exchange(
                            NONE,
                            index,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        // hyper closes the connection after this request.
                        return Some(State::Stop);
                    }
                    let next = if head.upgrade {
                        State::Stop
                    } else if head.transfer_encoding {
                        State::ChunkSize {
                            size: 0,
                            in_ext: false,
                        }
                    } else {
                        match head.content_length {
                            Some(n) if n > 0 => State::Fixed(n),
                            _ => State::Head(Head::new()),
                        }
                    };
                    return Some(next);
                }
                if head.colon {
                    match head.field() {
                        Field::ContentLength => match (head.value_ok, head.value) {
                            (true, Some(n)) => head.content_length = Some(n),
                            // Invalid: hyper rejects the request itself.
                            _ => return Some(State::Stop),
                        },
                        Field::TransferEncoding => head.transfer_encoding = true,
                        Field::Upgrade => head.upgrade = true,
                        Field::Other => {}
                    }
                }
                head.reset_line();
                None
            }
            _ => {
                head.line_len += 1;
                if head.first_line {
                    if head.name_len < NAME_CAP {
                        head.name[head.name_len] = b;
                        head.name_len += 1;
                    }
                } else if !head.colon {
                    if b == b':' {
                        head.colon = true;
                    } else if head.name_len < NAME_CAP {
                        head.name[head.name_len] = b;
                        head.name_len += 1;
                    } else {
                        head.name_len = NAME_CAP + 1;
                    }
                } else if head.field() == Field::ContentLength {
                    match b {
                        b'0'..=b'9' => {
                            let d = u64::from(b - b'0');
                            head.value = match head
                                .value
                                .unwrap_or(0)
                                .checked_mul(10)
                                .and_then(|v| v.checked_add(d))
                            {
                                Some(v) => Some(v),
                                None => {
                                    head.value_ok = false;
                                    None
                                }
                            };
                        }
                        b' ' | b'\t' => {}
                        _ => head.value_ok = false,
                    }
                }
                None
            }
        }
    }
}

/// A connection whose inbound HTTP/1 framing is followed by a scanner.
#[derive(Debug)]
pub struct SniffIo<I> {
    inner: I,
    scanner: Scanner,
}

impl<I> SniffIo<I> {
    /// Wraps `inner`; findings go to `framing`.
    pub fn new(inner: I, framing: Arc<ConnFraming>) -> Self {
        Self {
            inner,
            scanner: Scanner {
                state: State::Head(Head::new()),
                framing,
            },
        }
    }
}

impl Scanner {
    /// Every byte fed so far belongs to complete requests (empty lines between requests
    /// included), and the scan has not stopped.
    fn between_requests(&self) -> bool {
        matches!(self.state, State::Head(head) if head.first_line && head.line_len == 0)
    }
}

/// An idle plain connection is parked between requests (see `keda_http_runtime::serve`).
/// Once the scan stops (upgrade, CONNECT, h2 preface, ambiguous framing, anything it does
/// not understand) the connection is never parked again: hyper alone knows its state then.
impl Park for SniffIo<Stream> {
    const PARKS: bool = true;

    fn between_requests(&self) -> bool {
        self.scanner.between_requests()
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SniffIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && !matches!(this.scanner.state, State::Stop)
        {
            this.scanner.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SniffIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the scanner is between requests after each prefix of `stream` that ends at
    /// one of `cuts`.
    fn between_after(stream: &[u8], cuts: &[usize]) -> Vec<bool> {
        let mut scanner = Scanner {
            state: State::Head(Head::new()),
            framing: Arc::new(ConnFraming::default()),
        };
        let mut fed = 0;
        cuts.iter()
            .map(|&cut| {
                scanner.feed(&stream[fed..cut]);
                fed = cut;
                scanner.between_requests()
            })
            .collect()
    }

    #[test]
    fn any_chunking_gives_the_same_findings() {
        // Feeding a stream in pieces of any size (as reads deliver it) must find the same
        // heads, ambiguity and request boundaries.
        let stream: &[u8] =
            b"GET /a/very/long/path/beyond/the/kept/bytes?x=1 HTTP/1.1\r\nHost: a\r\n\
X-Long-Header-Name-Beyond-Cap: v:a:l\r\nUpgrade-Insecure-Requests: 1\r\n\r\n\
POST / HTTP/1.1\r\nHost: a\r\nCONTENT-length:  3 \r\nX: Transfer-Encoding: chunked\r\n\r\nabc\
POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n";
        let whole = scan(&[stream]);
        assert_eq!(whole.0, 3, "three heads");
        assert_eq!(whole.1, 2, "the third is ambiguous, nothing before it");
        for size in 1..=stream.len() {
            let pieces: Vec<&[u8]> = stream.chunks(size).collect();
            assert_eq!(scan(&pieces), whole, "pieces of {size} bytes");
        }
        let second_end = stream.windows(3).position(|w| w == b"abc").expect("body") + 3;
        for cut in [second_end - 1, second_end] {
            assert_eq!(
                between_after(stream, &[cut]),
                [cut == second_end],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn between_requests_only_at_request_boundaries() {
        // An idle connection is parked (and hyper's state dropped) only when this says
        // true: a head or body in progress must never be taken for the next request.
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let chunked =
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(
            between_after(get, &[0, 5, get.len() - 2, get.len()]),
            [true, false, false, true]
        );
        // Head complete but its body not: not between requests until the last body byte.
        assert_eq!(
            between_after(post, &[post.len() - 3, post.len() - 1, post.len()]),
            [false, false, true]
        );
        assert_eq!(
            between_after(
                chunked,
                &[chunked.len() - 5, chunked.len() - 2, chunked.len()]
            ),
            [false, false, true]
        );
        // Empty lines before a request are tolerated (hyper skips them too).
        assert_eq!(between_after(b"\r\n\r\n", &[4]), [true]);
        // After an upgrade or CONNECT the scan stops: never between requests again.
        let upgrade = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(between_after(upgrade, &[upgrade.len()]), [false]);
        let connect = b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(between_after(connect, &[connect.len()]), [false]);
    }

    fn scan(chunks: &[&[u8]]) -> (u64, u64) {
        let framing = Arc::new(ConnFraming::default());
        let mut scanner = Scanner {
            state: State::Head(Head::new()),
            framing: Arc::clone(&framing),
        };
        for chunk in chunks {
            scanner.feed(chunk);
        }
        (
            framing.heads.load(Ordering::Relaxed),
            framing.first_ambiguous.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn counts_heads_across_bodies() {
        let stream = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
GET /x HTTP/1.1\r\nHost: a\r\n\r\n\
POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nab\r\nd\r\n0\r\nX-Trailer: 1\r\n\r\n\
GET /last HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan(&[stream]), (4, NONE));
        // Byte by byte gives the same result.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan(&bytes), (4, NONE));
    }

    #[test]
    fn flags_content_length_with_transfer_encoding() {
        let stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(scan(&[stream]), (2, 1));
        let reversed =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(scan(&[reversed]), (1, 0));
    }

    #[test]
    fn stops_at_h2_preface_and_upgrades() {
        assert_eq!(scan(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"]), (0, NONE));
        let upgrade = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(scan(&[upgrade]), (1, NONE));
    }

    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Framing {
        None,
        Length(usize),
        Chunked(Vec<usize>, bool),
    }

    fn arb_request() -> impl Strategy<Value = (String, Framing, Vec<(String, String)>)> {
        let method = prop::sample::select(&["GET", "POST", "PUT", "DELETE"][..]);
        let path = "/[a-z0-9/]{0,40}(\\?[a-z=&]{0,20})?";
        let framing = prop_oneof![
            Just(Framing::None),
            (0usize..300).prop_map(Framing::Length),
            (prop::collection::vec(1usize..200, 0..5), any::<bool>())
                .prop_map(|(chunks, trailers)| Framing::Chunked(chunks, trailers)),
        ];
        let header = (
            prop::sample::select(
                &[
                    "X-Content-Length",
                    "Content-Lengthy",
                    "Accept",
                    "X-Transfer-Encoding",
                    "Cookie",
                    "Content-Type",
                ][..],
            ),
            "[ -~]{0,30}",
        )
            .prop_map(|(n, v)| (n.to_owned(), v.trim().to_owned()));
        (
            (method, path).prop_map(|(m, p)| format!("{m} {p} HTTP/1.1")),
            framing,
            prop::collection::vec(header, 0..6),
        )
    }

    fn encode(
        line: &str,
        framing: &Framing,
        headers: &[(String, String)],
        body_byte: u8,
    ) -> Vec<u8> {
        let mut out = format!("{line}\r\nHost: example.com\r\n").into_bytes();
        for (n, v) in headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        match framing {
            Framing::None => out.extend_from_slice(b"\r\n"),
            Framing::Length(n) => {
                out.extend_from_slice(format!("Content-Length: {n}\r\n\r\n").as_bytes());
                out.extend(std::iter::repeat_n(body_byte, *n));
            }
            Framing::Chunked(chunks, trailers) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for (i, n) in chunks.iter().enumerate() {
                    let size = if i % 2 == 0 {
                        format!("{n:x}")
                    } else {
                        format!("{n:X};ext=v")
                    };
                    out.extend_from_slice(format!("{size}\r\n").as_bytes());
                    out.extend(std::iter::repeat_n(body_byte, *n));
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                if *trailers {
                    out.extend_from_slice(b"X-Checksum: abc\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
        /// Valid pipelined requests (bodies full of header-like bytes), split anywhere: every
        /// head is counted and none is flagged; an ambiguous head is flagged at its index.
        #[test]
        fn scanner_follows_valid_framing(
            requests in prop::collection::vec(arb_request(), 1..6),
            ambiguous_at in prop::option::of(0usize..6),
            cuts in prop::collection::vec(1usize..64, 0..200),
        ) {
            let mut stream = Vec::new();
            for (line, framing, headers) in &requests {
                stream.extend(encode(line, framing, headers, b'\n'));
            }
            let ambiguous_at = ambiguous_at.filter(|i| *i <= requests.len());
            if let Some(i) = ambiguous_at {
                // Replace the tail from request i by an ambiguous request.
                let mut prefix = Vec::new();
                for (line, framing, headers) in requests.iter().take(i) {
                    prefix.extend(encode(line, framing, headers, b'\n'));
                }
                prefix.extend_from_slice(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
                stream = prefix;
            }
            let mut pieces = Vec::new();
            let mut rest: &[u8] = &stream;
            for cut in cuts {
                if rest.is_empty() {
                    break;
                }
                let (a, b) = rest.split_at(cut.min(rest.len()));
                pieces.push(a);
                rest = b;
            }
            pieces.push(rest);
            let (heads, flagged) = scan(&pieces);
            match ambiguous_at {
                None => {
                    prop_assert_eq!(heads, requests.len() as u64);
                    prop_assert_eq!(flagged, NONE);
                }
                Some(i) => {
                    prop_assert_eq!(heads, i as u64 + 1);
                    prop_assert_eq!(flagged, i as u64);
                }
            }
        }
    }
}
