//! The HTTP client for an interceptor's admin endpoints: `GET /queue` (one snapshot) and
//! `GET /queue/watch` (a newline-delimited stream of snapshots).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keda_http_api::queue::{QUEUE_PATH, QUEUE_WATCH_PATH, QueueCounts};

/// The largest `/queue` body or `/queue/watch` line accepted.
pub const MAX_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024;

/// A failed fetch.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request could not be built (a bad address).
    #[error("invalid request URI: {0}")]
    Uri(#[from] http::Error),
    /// Connecting or exchanging the request failed.
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    /// The interceptor answered with a non-200 status.
    #[error("unexpected status {0}")]
    Status(StatusCode),
    /// Reading the body failed or it was too large.
    #[error("reading the body: {0}")]
    Body(String),
    /// The body is not the `/queue` JSON.
    #[error("decoding the counts: {0}")]
    Decode(#[from] serde_json::Error),
}

/// A pooled HTTP/1 client for interceptor admin ports. Cheap to clone.
#[derive(Clone, Debug)]
pub struct QueueClient {
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl QueueClient {
    /// A client whose TCP connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self { http }
    }

    async fn get(
        &self,
        addr: SocketAddr,
        path: &str,
    ) -> Result<hyper::Response<Incoming>, FetchError> {
        let uri: Uri = format!("http://{addr}{path}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| FetchError::Uri(e.into()))?;
        let request = Request::get(uri).body(Empty::new())?;
        let response = self.http.request(request).await?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        Ok(response)
    }

    /// `GET http://<addr>/queue`. Not bounded in time: the caller applies its timeout.
    pub async fn fetch(&self, addr: SocketAddr) -> Result<QueueCounts, FetchError> {
        let response = self.get(addr, QUEUE_PATH).await?;
        let body = Limited::new(response.into_body(), MAX_SNAPSHOT_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Body(e.to_string()))?
            .to_bytes();
        Ok(QueueCounts::from_body(&body)?)
    }

    /// `GET http://<addr>/queue/watch`: the stream of snapshots, read with
    /// [`WatchStream::next`].
    pub async fn watch(&self, addr: SocketAddr) -> Result<WatchStream, FetchError> {
        let response = self.get(addr, QUEUE_WATCH_PATH).await?;
        Ok(WatchStream {
            body: response.into_body(),
            lines: LineBuffer::default(),
        })
    }
}

/// An open `/queue/watch` stream.
#[derive(Debug)]
pub struct WatchStream {
    body: Incoming,
    lines: LineBuffer,
}

impl WatchStream {
    /// The next snapshot; `None` when the interceptor ends the stream.
    pub async fn next(&mut self) -> Option<Result<QueueCounts, FetchError>> {
        loop {
            match self.lines.next_line() {
                Ok(Some(line)) => return Some(QueueCounts::from_body(&line).map_err(Into::into)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data);
                    }
                }
                Err(e) => return Some(Err(FetchError::Body(e.to_string()))),
            }
        }
    }
}

/// Splits a byte stream into non-empty lines.
#[derive(Debug, Default)]
struct LineBuffer {
    buf: BytesMut,
}

impl LineBuffer {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete non-empty line (without its newline), if one is buffered.
    fn next_line(&mut self) -> Result<Option<Bytes>, FetchError> {
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line = self.buf.split_to(pos).freeze();
            self.buf.advance(1);
            let trimmed = line.trim_ascii();
            if !trimmed.is_empty() {
                return Ok(Some(line));
            }
        }
        if self.buf.len() > MAX_SNAPSHOT_BYTES {
            self.buf.clear();
            return Err(FetchError::Body("watch line too long".to_owned()));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks() {
        let mut lines = LineBuffer::default();
        lines.push(b"{\"a/b\":{\"Concurrency\":1,");
        assert!(lines.next_line().expect("ok").is_none());
        lines.push(b"\"RequestCount\":2}}\n\n{}\r\n{");
        let first = lines.next_line().expect("ok").expect("a line");
        let counts = QueueCounts::from_body(&first).expect("json");
        assert_eq!(counts.0.get("a/b").map(|c| c.request_count), Some(2));
        let second = lines.next_line().expect("ok").expect("a line");
        assert_eq!(QueueCounts::from_body(&second).expect("json").0.len(), 0);
        assert!(
            lines.next_line().expect("ok").is_none(),
            "incomplete line stays"
        );
    }
}
