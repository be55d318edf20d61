//! Load: 200 concurrent kube-rs watchers (half with a label selector) and 2,000 objects. Every
//! watcher's reflector store must converge to exactly what a fresh list returns, paginated
//! lists must see every object once, and the retained history must stay within its bound.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeSet;

use std::time::Duration;

use common::within_for;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher};
use kube::{Api, ResourceExt};
use kube_standin::{LocalApiServer, ServerConfig};
use serde_json::json;
use tokio::sync::watch;

const WATCHERS: usize = 200;
const OBJECTS: usize = 2000;
const HISTORY: usize = 2048;
const SELECTOR: &str = "group=even";
/// Generous: debug builds on a busy 2-core machine.
const LOAD_WAIT: Duration = Duration::from_secs(240);

fn object(i: usize) -> ConfigMap {
    let group = if i.is_multiple_of(2) { "even" } else { "odd" };
    serde_json::from_value(json!({
        "metadata": {"name": format!("cm-{i:04}"), "labels": {"group": group}},
        "data": {"i": i.to_string()}
    }))
    .unwrap()
}

async fn create_range(api: &Api<ConfigMap>, range: std::ops::Range<usize>) {
    stream::iter(range)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &object(i))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
}

fn snapshot<'a>(items: impl Iterator<Item = &'a ConfigMap>) -> BTreeSet<(String, String)> {
    items
        .map(|c| (c.name_any(), c.resource_version().unwrap_or_default()))
        .collect()
}

struct Watcher {
    reader: reflector::Store<ConfigMap>,
    events: watch::Receiver<u64>,
    selective: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_watchers_and_two_thousand_objects_stay_correct() {
    let server = LocalApiServer::start_with(ServerConfig {
        history_capacity: HISTORY,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let client = server.client().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "load"}})).unwrap(),
        )
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "load");

    // Half the objects exist before the watchers start (their initial lists are paginated).
    within_for(
        LOAD_WAIT,
        "the first 1,000 creates",
        create_range(&api, 0..OBJECTS / 2),
    )
    .await;

    let mut open = server.watch_stats().subscribe();
    let mut watchers = Vec::with_capacity(WATCHERS);
    let mut tasks = Vec::with_capacity(WATCHERS);
    for n in 0..WATCHERS {
        let selective = n % 2 == 1;
        let config = if selective {
            watcher::Config::default().labels(SELECTOR)
        } else {
            watcher::Config::default()
        };
        let (reader, writer) = reflector::store();
        let (tx, events) = watch::channel(0u64);
        let stream = reflector(writer, watcher(api.clone(), config));
        tasks.push(tokio::spawn(async move {
            stream
                .for_each(|_| {
                    tx.send_modify(|n| *n += 1);
                    async {}
                })
                .await;
        }));
        watchers.push(Watcher {
            reader,
            events,
            selective,
        });
    }
    for w in &watchers {
        within_for(
            LOAD_WAIT,
            "every reflector to be ready",
            w.reader.wait_until_ready(),
        )
        .await
        .unwrap();
    }
    within_for(
        LOAD_WAIT,
        "200 open watches",
        open.wait_for(|n| *n >= WATCHERS),
    )
    .await
    .unwrap();

    // Load while watching: 1,000 more creates, 200 updates (half flip the label, moving
    // objects in and out of the selection), 100 deletes.
    within_for(
        LOAD_WAIT,
        "the second 1,000 creates",
        create_range(&api, OBJECTS / 2..OBJECTS),
    )
    .await;
    within_for(
        LOAD_WAIT,
        "the updates",
        stream::iter(0..200usize)
            .map(|i| {
                let api = api.clone();
                async move {
                    let name = format!("cm-{:04}", i * 10);
                    let mut patch = json!({"data": {"updated": "yes"}});
                    if i.is_multiple_of(2) {
                        patch["metadata"] = json!({"labels": {"group": "odd"}});
                    }
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .map(|_| ())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>(),
    )
    .await
    .unwrap();
    within_for(
        LOAD_WAIT,
        "the deletes",
        stream::iter(0..100usize)
            .map(|i| {
                let api = api.clone();
                async move {
                    api.delete(&format!("cm-{:04}", i * 20 + 1), &DeleteParams::default())
                        .await
                        .map(|_| ())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>(),
    )
    .await
    .unwrap();

    // Paginated lists see every object exactly once.
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        names.extend(page.items.iter().map(ResourceExt::name_any));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(names.len(), OBJECTS - 100);
    assert_eq!(unique.len(), names.len());

    // Every watcher converges to a fresh list.
    let all = snapshot(api.list(&ListParams::default()).await.unwrap().items.iter());
    let selected = snapshot(
        api.list(&ListParams::default().labels(SELECTOR))
            .await
            .unwrap()
            .items
            .iter(),
    );
    assert_eq!(all.len(), OBJECTS - 100);
    // 1,000 even objects, 100 of which were relabelled odd; the deletes were all odd.
    assert_eq!(selected.len(), 900);
    within_for(LOAD_WAIT, "every watcher to converge", async {
        for w in &mut watchers {
            let expected = if w.selective { &selected } else { &all };
            loop {
                let state = w.reader.state();
                if snapshot(state.iter().map(|c| &**c)) == *expected {
                    break;
                }
                w.events.changed().await.unwrap();
            }
        }
    })
    .await;

    // Memory for history is bounded.
    assert!(server.store().history_len() <= HISTORY);
    assert_eq!(
        server.store().history_len(),
        HISTORY,
        "history saturated by this load"
    );

    for t in tasks {
        t.abort();
    }
}
