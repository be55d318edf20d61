//! Watch semantics of the local API server: raw watches (order, resourceVersion resume,
//! bookmarks, timeouts, 410, selector transitions, initial events) and the acceptance test for
//! a kube-rs watcher + reflector over EndpointSlices surviving forced closes and 410s.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::time::Duration;

use common::{rv_of, within};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::{reflector, watcher};
use kube::{Api, ResourceExt};
use kube_standin::write::{DeleteOptions as StoreDeleteOptions, WriteOptions};
use kube_standin::{LocalApiServer, ServerConfig};
use serde_json::json;

fn cm(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": app}}, "data": {"v": "1"}}),
    )
    .unwrap()
}

fn slice(name: &str, service: &str, ip: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap()
}

/// Reads watch events until one that is not a bookmark.
async fn next_change<S>(stream: &mut S) -> WatchEvent<ConfigMap>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    within("a watch event", async {
        loop {
            match stream.next().await {
                Some(Ok(WatchEvent::Bookmark(_))) => continue,
                Some(event) => return event.unwrap(),
                None => panic!("watch ended"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn raw_watch_sends_changes_in_order_from_a_resource_version() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let pp = PostParams::default();
        cms.create(&pp, &cm("before", "x")).await.unwrap();
        let list = cms.list(&ListParams::default()).await.unwrap();
        let list_rv = list.metadata.resource_version.clone().unwrap();

        // Changes made before the watch starts are replayed from history.
        cms.create(&pp, &cm("a", "x")).await.unwrap();
        let mut stream = cms
            .watch(&WatchParams::default(), &list_rv)
            .await
            .unwrap()
            .boxed();
        cms.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "2"}})),
        )
        .await
        .unwrap();
        cms.delete("a", &DeleteParams::default()).await.unwrap();

        let mut last = list_rv.parse::<u64>().unwrap();
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let (kind, obj) = match next_change(&mut stream).await {
                WatchEvent::Added(o) => ("ADDED", o),
                WatchEvent::Modified(o) => ("MODIFIED", o),
                WatchEvent::Deleted(o) => ("DELETED", o),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(obj.name_any(), "a");
            let rv = rv_of(&obj.metadata);
            assert!(rv > last, "resourceVersions must increase");
            last = rv;
            kinds.push(kind);
        }
        assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    })
    .await;
}

#[tokio::test]
async fn watch_from_zero_starts_with_the_current_objects() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        cms.create(&PostParams::default(), &cm("existing", "x"))
            .await
            .unwrap();
        let mut stream = cms
            .watch(&WatchParams::default(), "0")
            .await
            .unwrap()
            .boxed();
        match next_change(&mut stream).await {
            WatchEvent::Added(o) => assert_eq!(o.name_any(), "existing"),
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn selector_watches_turn_label_changes_into_added_and_deleted() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let rv = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let wp = WatchParams::default().labels("app=web");
        let mut stream = cms.watch(&wp, &rv).await.unwrap().boxed();
        let pp = PostParams::default();
        cms.create(&pp, &cm("other", "db")).await.unwrap();
        cms.create(&pp, &cm("w", "web")).await.unwrap();
        let relabel = |app: &str| Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
        cms.patch("w", &PatchParams::default(), &relabel("db"))
            .await
            .unwrap();
        cms.patch("other", &PatchParams::default(), &relabel("web"))
            .await
            .unwrap();

        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(match next_change(&mut stream).await {
                WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
                WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
                WatchEvent::Deleted(o) => format!("DELETED {}", o.name_any()),
                other => panic!("unexpected {other:?}"),
            });
        }
        assert_eq!(seen, ["ADDED w", "DELETED w", "ADDED other"]);
    })
    .await;
}

#[tokio::test]
async fn bookmarks_carry_the_latest_resource_version() {
    common::bounded(async {
        let server = LocalApiServer::start_with(ServerConfig {
            bookmark_interval: Duration::from_millis(100),
            ..ServerConfig::default()
        })
        .await
        .unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let rv = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let mut stream = cms
            .watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        let created = cms
            .create(&PostParams::default(), &cm("b", "x"))
            .await
            .unwrap();
        let bookmark_rv = within("a bookmark after the change", async {
            loop {
                match stream.next().await {
                    Some(Ok(WatchEvent::Bookmark(b))) => {
                        let rv: u64 = b.metadata.resource_version.parse().unwrap();
                        if rv >= rv_of(&created.metadata) {
                            return rv;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
        .await;
        assert_eq!(bookmark_rv, rv_of(&created.metadata));
    })
    .await;
}

#[tokio::test]
async fn watches_end_after_timeout_seconds() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let rv = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let mut stream = cms
            .watch(&WatchParams::default().timeout(1), &rv)
            .await
            .unwrap()
            .boxed();
        within("the watch to end", async {
            while let Some(event) = stream.next().await {
                event.unwrap();
            }
        })
        .await;
        assert_eq!(server.watch_stats().open(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_resource_version_older_than_history_gets_410() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let old = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        cms.create(&PostParams::default(), &cm("c", "x"))
            .await
            .unwrap();
        server.faults().compact_history();
        let mut stream = cms
            .watch(&WatchParams::default(), &old)
            .await
            .unwrap()
            .boxed();
        match within("the 410", stream.next()).await {
            Some(Ok(WatchEvent::Error(e))) => {
                assert_eq!(e.code, 410);
                assert_eq!(e.reason, "Expired");
            }
            other => panic!("expected a 410 ERROR event, got {other:?}"),
        }
        // A list made after the compaction can be watched from.
        let fresh = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let mut stream = cms
            .watch(&WatchParams::default(), &fresh)
            .await
            .unwrap()
            .boxed();
        cms.create(&PostParams::default(), &cm("d", "x"))
            .await
            .unwrap();
        assert!(
            matches!(next_change(&mut stream).await, WatchEvent::Added(o) if o.name_any() == "d")
        );
    })
    .await;
}

#[tokio::test]
async fn history_is_bounded() {
    common::bounded(async {
        let server = LocalApiServer::start_with(ServerConfig {
            history_capacity: 32,
            ..ServerConfig::default()
        })
        .await
        .unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let first = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        for i in 0..100 {
            cms.create(&PostParams::default(), &cm(&format!("h{i}"), "x"))
                .await
                .unwrap();
        }
        assert_eq!(server.store().history_len(), 32);
        let mut stream = cms
            .watch(&WatchParams::default(), &first)
            .await
            .unwrap()
            .boxed();
        assert!(matches!(
            within("the 410", stream.next()).await,
            Some(Ok(WatchEvent::Error(e))) if e.code == 410
        ));
    })
    .await;
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_then_changes() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        cms.create(&PostParams::default(), &cm("one", "x"))
            .await
            .unwrap();
        cms.create(&PostParams::default(), &cm("two", "x"))
            .await
            .unwrap();
        let mut events = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
        let mut initial = Vec::new();
        within("InitDone", async {
            loop {
                match events.try_next().await.unwrap() {
                    Some(watcher::Event::Init) => {}
                    Some(watcher::Event::InitApply(o)) => initial.push(o.name_any()),
                    Some(watcher::Event::InitDone) => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
        .await;
        assert_eq!(initial, ["one", "two"]);
        cms.create(&PostParams::default(), &cm("three", "x"))
            .await
            .unwrap();
        match within("the live event", events.try_next()).await.unwrap() {
            Some(watcher::Event::Apply(o)) => assert_eq!(o.name_any(), "three"),
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
}

/// What the EndpointSlice watcher reported, simplified for comparison.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Init,
    InitApply(String),
    InitDone,
    Apply(String, Vec<String>),
    Delete(String),
}

fn addresses(s: &EndpointSlice) -> Vec<String> {
    s.endpoints
        .iter()
        .flatten()
        .flat_map(|e| e.addresses.clone())
        .collect()
}

#[tokio::test]
async fn reflector_over_endpoint_slices_survives_closes_and_410() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
        let pp = PostParams::default();
        slices
            .create(&pp, &slice("web-old", "web", "10.0.0.1"))
            .await
            .unwrap();

        let (reader, writer) = reflector::store::<EndpointSlice>();
        let config = watcher::Config::default().labels("kubernetes.io/service-name=web");
        let mut events = reflector(writer, watcher(slices.clone(), config)).boxed();
        let errors = std::cell::RefCell::new(Vec::new());
        let mut next = async || -> Seen {
            within("a watcher event", async {
                loop {
                    match events.next().await {
                        Some(Ok(watcher::Event::Init)) => return Seen::Init,
                        Some(Ok(watcher::Event::InitApply(s))) => {
                            return Seen::InitApply(s.name_any());
                        }
                        Some(Ok(watcher::Event::InitDone)) => return Seen::InitDone,
                        Some(Ok(watcher::Event::Apply(s))) => {
                            return Seen::Apply(s.name_any(), addresses(&s));
                        }
                        Some(Ok(watcher::Event::Delete(s))) => return Seen::Delete(s.name_any()),
                        Some(Err(e)) => errors.borrow_mut().push(e.to_string()),
                        None => panic!("watcher ended"),
                    }
                }
            })
            .await
        };

        assert_eq!(next().await, Seen::Init);
        assert_eq!(next().await, Seen::InitApply("web-old".into()));
        assert_eq!(next().await, Seen::InitDone);

        // Create, update, delete: seen in order; other services' slices are never seen.
        slices
            .create(&pp, &slice("db-1", "db", "10.0.9.9"))
            .await
            .unwrap();
        slices
            .create(&pp, &slice("web-1", "web", "10.0.0.2"))
            .await
            .unwrap();
        assert_eq!(
            next().await,
            Seen::Apply("web-1".into(), vec!["10.0.0.2".into()])
        );
        let more = json!({"endpoints": [
        {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
        {"addresses": ["10.0.0.3"], "conditions": {"ready": true}}]});
        slices
            .patch("web-1", &PatchParams::default(), &Patch::Merge(&more))
            .await
            .unwrap();
        assert_eq!(
            next().await,
            Seen::Apply("web-1".into(), vec!["10.0.0.2".into(), "10.0.0.3".into()])
        );
        slices
            .delete("web-old", &DeleteParams::default())
            .await
            .unwrap();
        assert_eq!(next().await, Seen::Delete("web-old".into()));

        // A forced watch close: the watcher resumes from its resourceVersion without relisting.
        server.faults().close_watches();
        slices
            .create(&pp, &slice("web-2", "web", "10.0.0.4"))
            .await
            .unwrap();
        assert_eq!(
            next().await,
            Seen::Apply("web-2".into(), vec!["10.0.0.4".into()])
        );

        // History compacted while the watch is down: the resume gets 410 and the watcher relists.
        // The changes go straight to the store, with no await in between, so that they are
        // all made before the watcher can reconnect.
        server.faults().close_watches();
        server.faults().compact_history();
        let kind = server
            .store()
            .kind("discovery.k8s.io", "v1", "endpointslices")
            .unwrap();
        server
            .store()
            .create(
                &kind,
                Some("default"),
                serde_json::to_value(slice("web-3", "web", "10.0.0.5")).unwrap(),
                &WriteOptions::default(),
            )
            .unwrap();
        server
            .store()
            .delete(
                &kind,
                Some("default"),
                "web-2",
                &StoreDeleteOptions::default(),
            )
            .unwrap();
        let mut relisted = Vec::new();
        loop {
            let seen = next().await;
            let done = seen == Seen::InitDone;
            relisted.push(seen);
            if done {
                break;
            }
        }
        assert_eq!(
            relisted,
            [
                Seen::Init,
                Seen::InitApply("web-1".into()),
                Seen::InitApply("web-3".into()),
                Seen::InitDone
            ]
        );
        let errors = errors.borrow().clone();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("too old resource version")),
            "{errors:?}"
        );

        // A slice leaving the selection is a delete for this watcher.
        let relabel = json!({"metadata": {"labels": {"kubernetes.io/service-name": "db"}}});
        slices
            .patch("web-3", &PatchParams::default(), &Patch::Merge(&relabel))
            .await
            .unwrap();
        assert_eq!(next().await, Seen::Delete("web-3".into()));

        // The reflector store ends equal to a fresh list.
        let fresh = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .unwrap();
        let mut expected: Vec<(String, Option<String>)> = fresh
            .items
            .iter()
            .map(|s| (s.name_any(), s.metadata.resource_version.clone()))
            .collect();
        let mut actual: Vec<(String, Option<String>)> = reader
            .state()
            .iter()
            .map(|s| (s.name_any(), s.metadata.resource_version.clone()))
            .collect();
        expected.sort();
        actual.sort();
        assert_eq!(actual, expected);
        assert_eq!(actual.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn metadata_watcher_sees_metadata_only_objects() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        cms.create(&PostParams::default(), &cm("first", "x"))
            .await
            .unwrap();
        let metadata: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(client, "default");
        let mut events = watcher(metadata, watcher::Config::default()).boxed();
        within("the initial list", async {
            loop {
                match events.try_next().await.unwrap() {
                    Some(watcher::Event::InitApply(o)) => {
                        assert_eq!(o.types.as_ref().unwrap().kind, "PartialObjectMetadata");
                        assert_eq!(o.metadata.name.as_deref(), Some("first"));
                    }
                    Some(watcher::Event::InitDone) => break,
                    Some(_) => {}
                    None => panic!("watcher ended"),
                }
            }
        })
        .await;
        cms.create(&PostParams::default(), &cm("second", "y"))
            .await
            .unwrap();
        match within("the live event", events.try_next()).await.unwrap() {
            Some(watcher::Event::Apply(o)) => {
                assert_eq!(o.types.as_ref().unwrap().kind, "PartialObjectMetadata");
                assert_eq!(o.metadata.labels.unwrap()["app"], "y");
            }
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn close_watches_ends_every_open_stream() {
    common::bounded(async {
        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let rv = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let mut a = cms
            .watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        let mut b = cms
            .watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        let mut open = server.watch_stats().subscribe();
        within("two open watches", open.wait_for(|n| *n == 2))
            .await
            .unwrap();
        server.faults().close_watches();
        for stream in [&mut a, &mut b] {
            within("the stream to end", async {
                while let Some(event) = stream.next().await {
                    assert!(matches!(event, Ok(WatchEvent::Bookmark(_))), "{event:?}");
                }
            })
            .await;
        }
        within("no open watches", open.wait_for(|n| *n == 0))
            .await
            .unwrap();
        // New watches are not affected.
        let mut c = cms
            .watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        cms.create(&PostParams::default(), &cm("after", "x"))
            .await
            .unwrap();
        assert!(
            matches!(next_change(&mut c).await, WatchEvent::Added(o) if o.name_any() == "after")
        );
    })
    .await;
}

#[tokio::test]
async fn watcher_with_backoff_recovers_from_injected_500s() {
    common::bounded(async {
        use kube::runtime::WatchStreamExt;

        let server = LocalApiServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut objects = watcher(cms.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        // Drive the watcher in the background; errors are passed through by the backoff (it
        // only spaces the retries out), applied objects are forwarded by name.
        let (tx, mut names) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            while let Some(item) = objects.next().await {
                if let Ok(o) = item {
                    let _ = tx.send(o.name_any());
                }
            }
        });
        cms.create(&PostParams::default(), &cm("first", "x"))
            .await
            .unwrap();
        assert_eq!(
            within("the first object", names.recv()).await.unwrap(),
            "first"
        );

        // The watch drops and the next two requests (both the watcher's) fail: with backoff
        // it retries until they pass, then carries on.
        let mut failures = server.faults().failures();
        server.faults().fail_next(2);
        server.faults().close_watches();
        within(
            "the watcher to hit both failures",
            failures.wait_for(|n| *n == 0),
        )
        .await
        .unwrap();
        cms.create(&PostParams::default(), &cm("second", "x"))
            .await
            .unwrap();
        assert_eq!(
            within("the object created after the failures", names.recv())
                .await
                .unwrap(),
            "second"
        );
        driver.abort();
        assert_eq!(server.faults().pending_failures(), 0);
    })
    .await;
}
