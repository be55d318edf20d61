//! The interceptor → scaler wire format.
//!
//! `GET /queue` on the interceptor's admin port answers `application/json` with one object per
//! route key `"<namespace>/<name>"`, keys sorted, followed by a newline:
//!
//! ```text
//! {"default/my-app":{"Concurrency":3,"RequestCount":42},"demo/other":{"Concurrency":0,"RequestCount":0}}
//! ```
//!
//! This is byte-for-byte the official add-on's format, so either side can talk to the other.
//!
//! `GET /queue/watch` (our addition) answers a chunked `application/x-ndjson` stream: each line
//! is a complete snapshot in the same format. A line is sent at once when the stream opens,
//! at once when a route goes from quiet to active, after other changes (coalesced so that at
//! most one such line is sent per [`WATCH_COALESCE`]), and otherwise at least every tick as a
//! heartbeat.
//! The scaler uses it to learn of the first request for a cold route without waiting for a poll.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Admin path of the snapshot.
pub const QUEUE_PATH: &str = "/queue";
/// Admin path of the push stream.
pub const QUEUE_WATCH_PATH: &str = "/queue/watch";
/// Content type of the push stream.
pub const QUEUE_WATCH_CONTENT_TYPE: &str = "application/x-ndjson";
/// The smallest gap between two pushed lines sent for the same kind of change.
pub const WATCH_COALESCE: Duration = Duration::from_millis(5);

/// The counts of one route on one interceptor.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCount {
    /// Requests in flight now.
    #[serde(rename = "Concurrency")]
    pub concurrency: i64,
    /// Requests received since the interceptor started (monotonic).
    #[serde(rename = "RequestCount")]
    pub request_count: i64,
}

/// The counts of every route an interceptor knows, keyed `"<namespace>/<name>"`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct QueueCounts(pub BTreeMap<String, QueueCount>);

impl QueueCounts {
    /// Encodes as the `/queue` body: JSON plus a trailing newline.
    pub fn to_body(&self) -> Vec<u8> {
        // Serializing a map of strings to plain structs cannot fail.
        let mut body = serde_json::to_vec(&self.0).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        body
    }

    /// Decodes a `/queue` body or one `/queue/watch` line.
    pub fn from_body(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// The route key the interceptor and scaler use: `"<namespace>/<name>"`.
pub fn route_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_byte_exact() {
        let mut counts = QueueCounts::default();
        counts.0.insert(
            route_key("demo", "other"),
            QueueCount {
                concurrency: 0,
                request_count: 0,
            },
        );
        counts.0.insert(
            route_key("default", "my-app"),
            QueueCount {
                concurrency: 3,
                request_count: 42,
            },
        );
        assert_eq!(
            String::from_utf8(counts.to_body()).expect("utf-8"),
            "{\"default/my-app\":{\"Concurrency\":3,\"RequestCount\":42},\"demo/other\":{\"Concurrency\":0,\"RequestCount\":0}}\n"
        );
    }

    #[test]
    fn decodes_official_format() {
        let body = br#"{"a/b":{"Concurrency":1,"RequestCount":7}}"#;
        let counts = QueueCounts::from_body(body).expect("decodes");
        assert_eq!(
            counts.0.get("a/b"),
            Some(&QueueCount {
                concurrency: 1,
                request_count: 7
            })
        );
    }
}
