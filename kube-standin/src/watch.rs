//! Watch streams: newline-delimited JSON `{"type": ..., "object": ...}` events written to a
//! chunked response body by one task per watch.
//!
//! A watch starts atomically with the store state ([`Store::subscribe`]): with
//! `sendInitialEvents=true` or resourceVersion ""/"0" it first sends the current objects as
//! ADDED (and, for `sendInitialEvents` with bookmarks allowed, a BOOKMARK annotated
//! `k8s.io/initial-events-end`), otherwise it replays retained events after the given
//! resourceVersion, or sends one ERROR event with a 410 `Status` when that is older than the
//! retained history (kube-rs relists on that). Label and field selectors are applied per event
//! against the old and new object, so an object leaving the selection is a DELETED and one
//! entering it an ADDED, as on a real server. Bookmarks (when allowed) carry the latest
//! resourceVersion this watch has seen; one is sent every bookmark interval and at the end of
//! `timeoutSeconds`. A watcher that falls more than the history capacity behind is cut off
//! (it resumes, or gets 410 and relists), so memory stays bounded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::kinds::ResourceKind;
use super::meta;
use super::selectors::Selectors;
use super::store::{EventType, Since, Store, StoredEvent};

/// What a watch request asked for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// Namespace, or all namespaces.
    pub namespace: Option<String>,
    /// Label and field selectors.
    pub selectors: Selectors,
    /// Where to start.
    pub since: Since,
    /// `sendInitialEvents=true`.
    pub send_initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds` (or the server default).
    pub timeout: Duration,
    /// `Accept: ...;as=PartialObjectMetadata`: send metadata-only objects.
    pub metadata_only: bool,
}

/// Counts open watches; tests wait on it instead of sleeping.
#[derive(Debug)]
pub struct WatchStats {
    open: watch::Sender<usize>,
}

impl Default for WatchStats {
    fn default() -> Self {
        Self {
            open: watch::Sender::new(0),
        }
    }
}

impl WatchStats {
    /// How many watch streams are open now.
    pub fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// A receiver of the open-watch count, e.g. for `wait_for(|n| *n >= 200)`.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.open.subscribe()
    }
}

struct OpenGuard(Arc<WatchStats>);

impl OpenGuard {
    fn new(stats: Arc<WatchStats>) -> Self {
        stats.open.send_modify(|n| *n += 1);
        Self(stats)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Starts a watch; the returned receiver yields the body chunks (one event per chunk).
/// The watch ends when `stop` is cancelled, the client goes away, or the timeout passes.
pub fn start(
    store: &Store,
    kind: &ResourceKind,
    request: WatchRequest,
    stop: CancellationToken,
    bookmark_interval: Duration,
    stats: Arc<WatchStats>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let since = if request.send_initial_events {
        Since::Now
    } else {
        request.since
    };
    let subscription = store.subscribe(kind, request.namespace.as_deref(), since);
    let kind = kind.clone();
    let guard = OpenGuard::new(stats);
    tokio::spawn(async move {
        let _guard = guard;
        let subscription = match subscription {
            Ok(s) => s,
            Err(gone) => {
                let _ = tx.send(error_line(&gone)).await;
                return;
            }
        };
        let mut feed = Feed {
            tx,
            kind,
            request,
            last_rv: subscription.start_rv,
        };
        for object in &subscription.initial {
            if feed.visible(object) {
                let line = feed.line("ADDED", object, None);
                if feed.tx.send(line).await.is_err() {
                    return;
                }
            }
        }
        if feed.request.send_initial_events && feed.request.bookmarks {
            let line = bookmark_line(&feed.kind, feed.last_rv, true);
            if feed.tx.send(line).await.is_err() {
                return;
            }
        }
        for event in &subscription.backlog {
            if !feed.deliver(event).await {
                return;
            }
        }
        feed.run(subscription.receiver, stop, bookmark_interval)
            .await;
    });
    rx
}

struct Feed {
    tx: mpsc::Sender<Bytes>,
    kind: ResourceKind,
    request: WatchRequest,
    last_rv: u64,
}

impl Feed {
    async fn run(
        &mut self,
        mut receiver: broadcast::Receiver<Arc<StoredEvent>>,
        stop: CancellationToken,
        bookmark_interval: Duration,
    ) {
        let deadline = tokio::time::sleep(self.request.timeout);
        tokio::pin!(deadline);
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + bookmark_interval,
            bookmark_interval,
        );
        let resource = self.kind.key();
        loop {
            tokio::select! {
                // A closed watch sends nothing more, even if events are waiting.
                biased;
                () = stop.cancelled() => return,
                () = self.tx.closed() => return,
                () = &mut deadline => {
                    if self.request.bookmarks {
                        let _ = self.tx.send(bookmark_line(&self.kind, self.last_rv, false)).await;
                    }
                    return;
                }
                _ = ticks.tick(), if self.request.bookmarks => {
                    if self.tx.send(bookmark_line(&self.kind, self.last_rv, false)).await.is_err() {
                        return;
                    }
                }
                received = receiver.recv() => match received {
                    Ok(event) => {
                        if event.resource == resource {
                            if !self.deliver(&event).await {
                                return;
                            }
                        } else {
                            self.last_rv = self.last_rv.max(event.rv);
                        }
                    }
                    // Fallen behind (or the store is gone): end the watch; the client resumes
                    // from the last resourceVersion it saw, or relists after a 410.
                    Err(_) => return,
                },
            }
        }
    }

    fn visible(&self, object: &Value) -> bool {
        self.request
            .namespace
            .as_deref()
            .is_none_or(|ns| ns == meta::str_field(object, "namespace"))
            && self.request.selectors.matches(object)
    }

    /// Sends one stored event, translated through the selectors; false when the client left.
    async fn deliver(&mut self, event: &StoredEvent) -> bool {
        self.last_rv = self.last_rv.max(event.rv);
        let now = self.visible(&event.object);
        let before = event.previous.as_deref().is_some_and(|p| self.visible(p));
        let kind = match (event.kind, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            (EventType::Deleted, _, true) => "DELETED",
            _ => return true,
        };
        let line = self.line(kind, &event.object, Some(event.object_json()));
        self.tx.send(line).await.is_ok()
    }

    /// One event line; `encoded` is the object's JSON when already at hand.
    fn line(&self, kind: &str, object: &Value, encoded: Option<&Bytes>) -> Bytes {
        if self.request.metadata_only {
            return event_line(kind, &partial_metadata(object));
        }
        match encoded {
            Some(json) => encoded_line(kind, json),
            None => event_line(kind, object),
        }
    }
}

/// The `meta.k8s.io/v1` `PartialObjectMetadata` view of an object.
pub fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    // Serialising a `Value` cannot fail.
    encoded_line(
        kind,
        &Bytes::from(serde_json::to_vec(object).unwrap_or_default()),
    )
}

fn encoded_line(kind: &str, object_json: &Bytes) -> Bytes {
    let mut line = Vec::with_capacity(object_json.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object_json);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

fn bookmark_line(kind: &ResourceKind, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end && let Some(map) = metadata.as_object_mut() {
        map.insert(
            "annotations".to_owned(),
            json!({"k8s.io/initial-events-end": "true"}),
        );
    }
    let object = json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata});
    event_line("BOOKMARK", &object)
}

fn error_line(error: &ApiError) -> Bytes {
    event_line("ERROR", &error.to_status())
}
