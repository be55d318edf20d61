//! Connections to backends over HTTP/1.1, plain and TLS: dialling within the connect timeout,
//! the hyper handshake, and one pool of idle connections ([`pool`]) that bounds idle
//! connections per destination and in total (compat §1.5: `KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST`,
//! `KEDA_HTTP_MAX_IDLE_CONNS`), whichever of the two a connection speaks.
//!
//! A destination is a [`Key`]: an endpoint address, the Service authority (resolved by the
//! cluster's DNS when a connection is made, never per request), or an endpoint address with
//! the name its TLS certificate is verified for. The TLS handshake itself and the shared `h2`
//! connections live in [`crate::upstream_tls`]; h2c in [`crate::proxy::forward`].
//!
//! Generic over the request body so that this module needs nothing from [`crate::proxy`].

pub mod pool;

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1;
use hyper::rt::{Read, Write};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

pub use pool::{IDLE_TIMEOUT, IdleLimits, IdlePool, Reusable};

/// A boxed error, as hyper's body bounds want it.
type BoxError = Box<dyn StdError + Send + Sync>;

/// Where pooled connections go (owned; kept in the pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// Plain HTTP/1.1 to an endpoint.
    Addr(SocketAddr),
    /// Plain HTTP/1.1 to the Service authority `<svc>.<ns>:<port>`.
    Authority(Box<str>),
    /// HTTP/1.1 over TLS to an endpoint, verified for a name.
    Tls(SocketAddr, ServerName<'static>),
}

/// A [`Key`] as borrowed for a lookup (nothing allocated per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// Plain HTTP/1.1 to an endpoint.
    Addr(SocketAddr),
    /// Plain HTTP/1.1 to the Service authority.
    Authority(&'a str),
    /// HTTP/1.1 over TLS to an endpoint, verified for a name.
    Tls(SocketAddr, &'a ServerName<'static>),
}

impl Key {
    /// The borrowed form, to compare with a lookup.
    pub fn as_ref(&self) -> KeyRef<'_> {
        match self {
            Self::Addr(addr) => KeyRef::Addr(*addr),
            Self::Authority(authority) => KeyRef::Authority(authority),
            Self::Tls(addr, name) => KeyRef::Tls(*addr, name),
        }
    }
}

impl KeyRef<'_> {
    /// The owned form, to keep in the pool.
    pub fn to_owned(self) -> Key {
        match self {
            Self::Addr(addr) => Key::Addr(addr),
            Self::Authority(authority) => Key::Authority(authority.into()),
            Self::Tls(addr, name) => Key::Tls(addr, name.clone()),
        }
    }
}

/// Why no connection could be made; nothing of a request was sent.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The TCP connect did not finish within the connect timeout.
    #[error("connect timed out")]
    Timeout,
    /// The TCP connect (or the Service name's resolution) failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error("HTTP/1.1 handshake: {0}")]
    Http(#[source] hyper::Error),
}

/// Why sending on a pooled HTTP/1.1 connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The pooled connection had closed before the request went out, and a new one could not
    /// be made; nothing was sent.
    #[error(transparent)]
    Dial(DialError),
    /// The exchange failed after the request went out.
    #[error(transparent)]
    Upstream(hyper::Error),
}

/// A TCP connection to `addr` (an address, or a name resolved now) within `timeout`, without
/// Nagle's delay.
pub async fn dial<A: tokio::net::ToSocketAddrs>(
    addr: A,
    timeout: Duration,
) -> Result<TcpStream, DialError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(DialError::Timeout),
        Ok(Err(e)) => Err(DialError::Connect(e)),
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
    }
}

/// The HTTP/1.1 client handshake on `io`; the connection is driven by a task of its own
/// (upgrades allowed) that ends when the connection closes or its sender is dropped while
/// idle.
pub async fn handshake<B, I>(io: I, addr: SocketAddr) -> Result<http1::SendRequest<B>, hyper::Error>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%addr, %error, "upstream HTTP/1.1 connection ended");
        }
    });
    Ok(sender)
}

/// Plain HTTP/1.1 connections to backends, and the idle pool shared with TLS.
pub struct Http1<B> {
    idle: IdlePool<http1::SendRequest<B>>,
    connect_timeout: Duration,
}

impl<B> std::fmt::Debug for Http1<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1")
            .field("idle", &self.idle)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl<B> Http1<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Connections made within `connect_timeout`, kept idle within `limits`.
    pub fn new(connect_timeout: Duration, limits: IdleLimits) -> Self {
        Self {
            idle: IdlePool::new(limits),
            connect_timeout,
        }
    }

    /// The idle pool (shared with backend TLS, so that one bound covers both).
    pub fn idle(&self) -> &IdlePool<http1::SendRequest<B>> {
        &self.idle
    }

    /// An idle connection to `key` ready for a request, else a new one. `key` is an
    /// [`KeyRef::Addr`] or [`KeyRef::Authority`]; TLS connections are made by
    /// [`crate::upstream_tls`].
    pub async fn sender(&self, key: KeyRef<'_>) -> Result<http1::SendRequest<B>, DialError> {
        if let Some(sender) = self.idle.take(key) {
            return Ok(sender);
        }
        self.connect(key).await
    }

    async fn connect(&self, key: KeyRef<'_>) -> Result<http1::SendRequest<B>, DialError> {
        let tcp = match key {
            KeyRef::Addr(addr) | KeyRef::Tls(addr, _) => dial(addr, self.connect_timeout).await?,
            KeyRef::Authority(authority) => dial(authority, self.connect_timeout).await?,
        };
        let addr = tcp
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        handshake(TokioIo::new(tcp), addr)
            .await
            .map_err(DialError::Http)
    }

    /// Sends `req` on `sender`, a connection to `key`, and parks the connection for reuse
    /// once the response headers are in (not after `101 Switching Protocols`: an upgraded
    /// connection belongs to its splice). When `sender` turns out closed before the request
    /// went out, the request goes once more on a new connection.
    pub async fn send(
        &self,
        key: KeyRef<'_>,
        mut sender: http1::SendRequest<B>,
        req: Request<B>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut error = match sender.try_send_request(req).await {
            Ok(response) => {
                self.idle.park_after(key, sender, &response);
                return Ok(response);
            }
            Err(error) => error,
        };
        let Some(req) = error.take_message() else {
            return Err(SendError::Upstream(error.into_error()));
        };
        tracing::debug!(?key, "pooled upstream connection was closed; reconnecting");
        let mut sender = self.connect(key).await.map_err(SendError::Dial)?;
        let response = sender
            .send_request(req)
            .await
            .map_err(SendError::Upstream)?;
        self.idle.park_after(key, sender, &response);
        Ok(response)
    }
}

impl<B: Send + 'static> IdlePool<http1::SendRequest<B>> {
    /// Parks `sender` for reuse once `response`'s headers are in, unless the connection was
    /// upgraded (`101`: it belongs to the splice). Plain and TLS HTTP/1.1 both park here.
    pub fn park_after(
        &self,
        key: KeyRef<'_>,
        sender: http1::SendRequest<B>,
        response: &Response<Incoming>,
    ) {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            self.put(key, sender);
        }
    }
}

#[cfg(test)]
mod tests;
