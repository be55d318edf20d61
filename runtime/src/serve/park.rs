//! Parking idle HTTP/1.1 keep-alive connections.
//!
//! hyper keeps a connection's read buffer, write buffer and dispatcher for as long as the
//! connection is open: about 16 KiB, also while it waits for a next request that may never
//! come (an ingress may hold thousands of such connections to us). A connection served here
//! is driven by hyper's HTTP/1 connection until it is idle, then taken apart with
//! `into_parts`: the socket, any bytes hyper had read but not used, and the service are
//! kept; hyper's buffers and state are freed; the task waits for the socket to be readable
//! and then builds a new hyper connection on the same socket.
//!
//! A connection is parked when it has been idle for [`PARK_AFTER`]; idle means, when hyper
//! has returned `Pending`:
//! - every request hyper handed to the service has its response ended and dropped (no
//!   service future, no response body in flight),
//! - everything hyper wrote has been flushed (its last write-side call was a flush that
//!   succeeded),
//! - hyper's last read found nothing, and the I/O said then that every byte read so far
//!   belongs to complete requests ([`Park::between_requests`]): no head or body is in
//!   progress, so the next hyper connection cannot take body bytes for a request.
//!
//! A parked connection is closed when it stays idle for the header-read timeout (hyper
//! applies that timeout to an idle connection too), and at once on a graceful stop, as hyper
//! closes an idle connection then. The first byte un-parks the connection and hyper's own
//! header-read timer starts then, so a client that starts a head just before the parked
//! timeout has up to twice the bound in all.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Builder;

/// I/O that knows whether it is between HTTP/1 requests, so an idle connection can be parked.
pub trait Park: AsyncRead + AsyncWrite + Unpin {
    /// Whether plain connections with this I/O are parked at all (TLS ones never are).
    const PARKS: bool;

    /// Every byte read so far belongs to complete requests: none is part of a request head
    /// or body still in progress. Asked right after a read found nothing to read.
    fn between_requests(&self) -> bool;

    /// Waits until the connection has something to read (bytes, end of stream or an error).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// How long a connection stays idle before it is parked. Parking and un-parking cost about
/// 6,700 instructions (13% of a proxied request, by callgrind): a busy keep-alive connection,
/// whose next request follows within milliseconds, keeps its hyper state; memory is saved
/// where it counts, on connections idle for longer.
const PARK_AFTER: Duration = Duration::from_millis(10);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a new plain connection starts with.
pub(super) enum FirstBytes {
    /// Not the HTTP/2 preface: HTTP/1.
    Http1,
    /// The HTTP/2 preface, or its beginning so far.
    Other,
    /// Nothing within the header-read timeout, end of stream, an error or a stop.
    Nothing,
}

/// Looks at a new connection's first bytes without consuming them. Until they arrive the
/// connection costs its socket only.
pub(super) async fn first_bytes(
    tcp: &TcpStream,
    wait: Duration,
    stop: &CancellationToken,
) -> FirstBytes {
    let mut start = [0u8; 24];
    let peeked = tokio::select! {
        peeked = tokio::time::timeout(wait, tcp.peek(&mut start)) => peeked,
        () = stop.cancelled() => return FirstBytes::Nothing,
    };
    match peeked {
        Ok(Ok(0) | Err(_)) | Err(_) => FirstBytes::Nothing,
        Ok(Ok(n)) if H2_PREFACE.starts_with(&start[..n]) => FirstBytes::Other,
        Ok(Ok(_)) => FirstBytes::Http1,
    }
}

/// What the service wrapper and the I/O wrapper tell the driver. One task uses it; the
/// atomics only make it `Sync`.
#[derive(Debug)]
struct Activity {
    /// Requests handed to the service whose response has not ended yet.
    open: AtomicUsize,
    /// hyper's last read found nothing, between requests.
    read_idle: AtomicBool,
    /// hyper's last write-side call was a successful flush.
    flushed: AtomicBool,
}

impl Activity {
    fn is_idle(&self) -> bool {
        self.open.load(Ordering::Relaxed) == 0
            && self.read_idle.load(Ordering::Relaxed)
            && self.flushed.load(Ordering::Relaxed)
    }
}

/// Serves one plain HTTP/1.1 connection, parking it whenever it is idle.
pub(super) async fn serve_http1<Io, S, B>(
    io: Io,
    peer: SocketAddr,
    builder: &Builder,
    service: S,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) where
    Io: Park + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity {
        open: AtomicUsize::new(0),
        read_idle: AtomicBool::new(false),
        flushed: AtomicBool::new(true),
    });
    let mut service = Counted {
        inner: service,
        activity: Arc::clone(&activity),
    };
    let mut io = Tracked {
        io,
        unread: Bytes::new(),
        activity: Arc::clone(&activity),
    };
    loop {
        let mut conn = Box::pin(
            builder
                .http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        let outcome = {
            let stopped = stop.cancelled();
            tokio::pin!(stopped);
            // Armed at the start of each idle spell; parks the connection when it fires.
            let grace = tokio::time::sleep(PARK_AFTER);
            tokio::pin!(grace);
            let mut idle_since_armed = false;
            poll_fn(|cx| {
                if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Outcome::Ended(result));
                }
                if stopped.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Outcome::Stop);
                }
                if !activity.is_idle() {
                    idle_since_armed = false;
                    return Poll::Pending;
                }
                if !idle_since_armed {
                    idle_since_armed = true;
                    grace
                        .as_mut()
                        .reset(tokio::time::Instant::now() + PARK_AFTER);
                }
                match grace.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Outcome::Idle),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await
        };
        match outcome {
            Outcome::Ended(Ok(())) => return,
            Outcome::Ended(Err(error)) => {
                tracing::debug!(%peer, %error, "connection ended with an error");
                return;
            }
            Outcome::Stop => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = hard_stop.cancelled() => {}
                }
                return;
            }
            Outcome::Idle => {}
        }
        // `None` only after an upgrade, which ends the connection future instead.
        let Some(parts) = Pin::into_inner(conn).into_parts() else {
            return;
        };
        let hyper::server::conn::http1::Parts {
            io: hyper_io,
            read_buf,
            service: kept,
            ..
        } = parts;
        io = hyper_io.into_inner();
        service = kept;
        // hyper's read buffer comes back as a view of its whole allocation (8 KiB or more):
        // keep a copy of the few unused bytes, if any, and free the buffer before parking.
        io.unread = if read_buf.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&read_buf)
        };
        drop(read_buf);
        activity.read_idle.store(false, Ordering::Relaxed);
        // Parked: the socket, a few bytes of state and the service until the client writes.
        let parked = &mut io; // a unique borrow: the future stays `Send` without `Io: Sync`
        let readable = poll_fn(move |cx| parked.io.poll_read_ready(cx));
        tokio::select! {
            ready = tokio::time::timeout(builder.limits.header_read_timeout, readable) => {
                if !matches!(ready, Ok(Ok(()))) {
                    return;
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

enum Outcome {
    Ended(hyper::Result<()>),
    Stop,
    Idle,
}

/// The connection's I/O as hyper sees it: records what hyper's reads and writes tell about
/// idleness, and first gives back the bytes a previous hyper connection had read but not used.
struct Tracked<Io> {
    io: Io,
    unread: Bytes,
    activity: Arc<Activity>,
}

impl<Io: Park> AsyncRead for Tracked<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread.split_to(n));
            this.activity.read_idle.store(false, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let idle = polled.is_pending() && this.io.between_requests();
        this.activity.read_idle.store(idle, Ordering::Relaxed);
        polled
    }
}

impl<Io: Park> AsyncWrite for Tracked<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.activity.flushed.store(false, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.activity.flushed.store(false, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            self.activity.flushed.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.activity.flushed.store(false, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The service, counting each request from its call until its response body is dropped.
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

/// One request not yet answered in full; dropping it ends the count.
struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Counted<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<CountedBody<B>>;
    type Error = Infallible;
    type Future = CountedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.activity.open.fetch_add(1, Ordering::Relaxed);
        CountedFuture {
            inner: self.inner.call(req),
            open: Some(Open(Arc::clone(&self.activity))),
        }
    }
}

pin_project_lite::pin_project! {
    /// The service's future; hands its [`Open`] on to the response body.
    struct CountedFuture<F> {
        #[pin]
        inner: F,
        open: Option<Open>,
    }
}

impl<F, B> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<CountedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let open = this.open.take();
        Poll::Ready(Ok(response.map(|inner| CountedBody { inner, _open: open })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its request's count when hyper drops it.
    struct CountedBody<B> {
        #[pin]
        inner: B,
        _open: Option<Open>,
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
