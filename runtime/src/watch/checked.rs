//! Watches that one bad object cannot break: the kind is listed and watched as untyped
//! objects, and each item is decoded and checked on its own. A good item reaches the store
//! typed; a bad one (a field our types refuse, a rule our validation refuses) is skipped,
//! logged with its namespace, name and reason once per change, counted in
//! [`InvalidObjects`] and handed to an optional callback. No body is ever logged.
//!
//! An object that turns bad is removed from the store (so a running process and a restarted
//! one agree on what is served); once it is fixed, it comes back as any new object.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

use futures::{Stream, StreamExt as _};
use kube::api::{ApiResource, DynamicObject, TypeMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::InvalidObjects;
use super::backoff::QuickBackoff;

/// An object skipped by a checked watch.
#[derive(Debug, Clone)]
pub struct Invalid {
    /// Its kind (`InterceptorRoute`).
    pub kind: String,
    /// Its namespace, if namespaced.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Why it was skipped: the failing field path and what is wrong with it.
    pub reason: String,
    /// The object as the server sent it, `managedFields` removed (for status writers).
    pub object: DynamicObject,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}: {}", self.kind, self.name, self.reason),
            None => write!(f, "{} {}: {}", self.kind, self.name, self.reason),
        }
    }
}

type CheckFn<K> = Box<dyn Fn(&K) -> Result<(), String> + Send + Sync>;
type ReportFn = Box<dyn FnMut(&Invalid) + Send>;

/// What a checked watch does beyond decoding: a validation, the counter of skipped
/// objects and a callback for each newly skipped object (once per change).
pub struct Checks<K> {
    check: CheckFn<K>,
    counter: Option<InvalidObjects>,
    report: Option<ReportFn>,
    log: bool,
}

impl<K> fmt::Debug for Checks<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checks")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl<K> Default for Checks<K> {
    /// Decoding only.
    fn default() -> Self {
        Self::new(|_| Ok(()))
    }
}

impl<K> Checks<K> {
    /// Objects that decode but fail `check` (its error is the reason) are skipped too.
    pub fn new(check: impl Fn(&K) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self {
            check: Box::new(check),
            counter: None,
            report: None,
            log: true,
        }
    }

    /// No log line for skipped objects: for a second watch of a kind whose skipped objects
    /// another watch of the same process already reports.
    #[must_use]
    pub fn silent(mut self) -> Self {
        self.log = false;
        self
    }

    /// Counts skipped objects in `counter`.
    #[must_use]
    pub fn counted(mut self, counter: InvalidObjects) -> Self {
        self.counter = Some(counter);
        self
    }

    /// Calls `report` for each newly skipped object (once per change of it).
    #[must_use]
    pub fn on_invalid(mut self, report: impl FnMut(&Invalid) + Send + 'static) -> Self {
        self.report = Some(Box::new(report));
        self
    }
}

/// What a checked watch needs of its kind.
pub trait CheckedKind:
    Resource<DynamicType: Default + Eq + Hash + Clone + Send + Sync>
    + Clone
    + DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> CheckedKind for K where
    K: Resource<DynamicType: Default + Eq + Hash + Clone + Send + Sync>
        + Clone
        + DeserializeOwned
        + fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Watches `K` in `namespace` (all namespaces when `None`) with `config`, decodes and checks
/// each object, and reflects the good ones into `writer`. The stream must be polled for the
/// store to fill; it yields the typed events the store saw (errors included, for logging)
/// and retries with [`QuickBackoff`].
pub fn reflect_checked<K: CheckedKind>(
    client: Client,
    namespace: Option<&str>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    checks: Checks<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
    let resource = ApiResource::erase::<K>(&K::DynamicType::default());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let mut decoder = Decoder::new(resource, writer.as_reader(), checks);
    let events = watcher(api, config)
        .backoff(QuickBackoff::default())
        .filter_map(move |event| std::future::ready(decoder.event(event)));
    reflector::reflector(writer, events)
}

/// Namespace and name.
type Key = (Option<String>, String);

/// What was reported for an object: a new report is due when any part changes.
#[derive(Debug, PartialEq, Eq)]
struct Reported {
    uid: Option<String>,
    /// `metadata.generation` (spec changes), else `metadata.resourceVersion`: our own status
    /// writes do not bring a report back.
    change: Option<String>,
    /// Whether deletion has started (a finalizer holder must act on that).
    deleting: bool,
    reason: String,
}

/// Turns untyped watch events into typed ones, skipping and reporting bad objects.
struct Decoder<K: CheckedKind> {
    types: TypeMeta,
    store: Store<K>,
    checks: Checks<K>,
    reported: HashMap<Key, Reported>,
    /// Objects seen in the (re)list under way, to forget reports of vanished objects.
    listed: HashSet<Key>,
}

impl<K: CheckedKind> Decoder<K> {
    fn new(resource: ApiResource, store: Store<K>, checks: Checks<K>) -> Self {
        Self {
            types: TypeMeta {
                api_version: resource.api_version,
                kind: resource.kind,
            },
            store,
            checks,
            reported: HashMap::new(),
            listed: HashSet::new(),
        }
    }

    fn event(
        &mut self,
        event: Result<watcher::Event<DynamicObject>, watcher::Error>,
    ) -> Option<Result<watcher::Event<K>, watcher::Error>> {
        let event = match event {
            Err(error) => return Some(Err(error)),
            Ok(event) => event,
        };
        Some(Ok(match event {
            watcher::Event::Init => {
                self.listed.clear();
                watcher::Event::Init
            }
            watcher::Event::InitApply(obj) => {
                self.listed.insert(key(&obj));
                watcher::Event::InitApply(self.decode(obj)?)
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut self.listed);
                self.reported.retain(|k, _| listed.contains(k));
                watcher::Event::InitDone
            }
            watcher::Event::Apply(obj) => {
                let k = key(&obj);
                match self.decode(obj) {
                    Some(good) => watcher::Event::Apply(good),
                    // It turned bad: what the store holds of it is no longer served.
                    None => watcher::Event::Delete(self.stored(&k)?),
                }
            }
            watcher::Event::Delete(obj) => {
                let k = key(&obj);
                self.reported.remove(&k);
                match self.typed(obj) {
                    Ok(gone) => watcher::Event::Delete(gone),
                    Err(_) => watcher::Event::Delete(self.stored(&k)?),
                }
            }
        }))
    }

    /// The typed object if it decodes and passes the check; otherwise reports it.
    fn decode(&mut self, obj: DynamicObject) -> Option<K> {
        let reason = match self.typed(obj.clone()) {
            Ok(good) => match (self.checks.check)(&good) {
                Ok(()) => {
                    self.reported.remove(&key(&obj));
                    return Some(good);
                }
                Err(reason) => reason,
            },
            Err(reason) => reason,
        };
        self.report(obj, reason);
        None
    }

    /// `obj` decoded as `K` (without `managedFields`), or the failing path and why.
    fn typed(&self, mut obj: DynamicObject) -> Result<K, String> {
        obj.metadata.managed_fields = None;
        if obj.types.is_none() {
            obj.types = Some(self.types.clone());
        }
        let value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            }
        })
    }

    fn report(&mut self, mut obj: DynamicObject, reason: String) {
        obj.metadata.managed_fields = None;
        let k = key(&obj);
        let reported = Reported {
            uid: obj.metadata.uid.clone(),
            change: obj
                .metadata
                .generation
                .map(|g| g.to_string())
                .or_else(|| obj.metadata.resource_version.clone()),
            deleting: obj.metadata.deletion_timestamp.is_some(),
            reason,
        };
        if self.reported.get(&k) == Some(&reported) {
            return;
        }
        let invalid = Invalid {
            kind: self.types.kind.clone(),
            namespace: k.0.clone(),
            name: k.1.clone(),
            reason: reported.reason.clone(),
            object: obj,
        };
        if self.checks.log {
            tracing::warn!(
                kind = %invalid.kind,
                namespace = invalid.namespace.as_deref().unwrap_or_default(),
                name = %invalid.name,
                reason = %invalid.reason,
                "skipping an invalid object until it is fixed"
            );
        }
        if let Some(counter) = &self.checks.counter {
            counter.inc(&invalid.kind);
        }
        if let Some(report) = &mut self.checks.report {
            report(&invalid);
        }
        self.reported.insert(k, reported);
    }

    /// The stored (good) version of the object at `k`, if any.
    fn stored(&self, k: &Key) -> Option<K> {
        let mut r = ObjectRef::<K>::new(&k.1);
        if let Some(ns) = &k.0 {
            r = r.within(ns);
        }
        self.store.get(&r).map(|obj| (*obj).clone())
    }
}

fn key(obj: &DynamicObject) -> Key {
    (
        obj.metadata.namespace.clone(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    use super::*;

    fn dynamic(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn cm(name: &str, generation: i64, data: serde_json::Value) -> DynamicObject {
        dynamic(json!({
            "metadata": {"name": name, "namespace": "ns", "generation": generation,
                         "managedFields": [{"manager": "x"}]},
            "data": data,
        }))
    }

    fn decoder(
        reports: Arc<Mutex<Vec<String>>>,
        counter: InvalidObjects,
    ) -> (Decoder<ConfigMap>, reflector::store::Writer<ConfigMap>) {
        let (store, writer) = reflector::store::<ConfigMap>();
        let checks = Checks::new(|cm: &ConfigMap| match cm.data.as_ref() {
            Some(d) if d.contains_key("forbidden") => Err("data.forbidden: not allowed".into()),
            _ => Ok(()),
        })
        .counted(counter)
        .on_invalid(move |i| reports.lock().unwrap().push(i.to_string()));
        (
            Decoder::new(ApiResource::erase::<ConfigMap>(&()), store, checks),
            writer,
        )
    }

    fn apply(
        d: &mut Decoder<ConfigMap>,
        w: &mut reflector::store::Writer<ConfigMap>,
        e: watcher::Event<DynamicObject>,
    ) -> Option<watcher::Event<ConfigMap>> {
        let out = d.event(Ok(e)).map(|r| r.unwrap());
        if let Some(e) = &out {
            w.apply_watcher_event(e);
        }
        out
    }

    #[test]
    fn a_bad_item_is_skipped_and_reported_once_per_change() {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let counter = InvalidObjects::default();
        let (mut d, mut w) = decoder(Arc::clone(&reports), counter.clone());
        let store = w.as_reader();
        let good = cm("good", 1, json!({"a": "b"}));
        let bad = cm("bad", 1, json!({"a": 5}));
        for _ in 0..2 {
            // A first list and a relist of the same objects.
            apply(&mut d, &mut w, watcher::Event::Init);
            let typed = apply(&mut d, &mut w, watcher::Event::InitApply(good.clone()));
            assert!(matches!(typed, Some(watcher::Event::InitApply(c))
                if c.metadata.managed_fields.is_none()));
            assert!(apply(&mut d, &mut w, watcher::Event::InitApply(bad.clone())).is_none());
            apply(&mut d, &mut w, watcher::Event::InitDone);
        }
        assert_eq!(store.len(), 1, "only the good object is stored");
        let reports = reports.lock().unwrap().clone();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(
            reports[0].starts_with("ConfigMap ns/bad: data.a: invalid type"),
            "{}",
            reports[0]
        );
        assert_eq!(counter.get("ConfigMap"), 1);
    }

    #[test]
    fn an_object_that_turns_bad_leaves_the_store_and_comes_back_when_fixed() {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let counter = InvalidObjects::default();
        let (mut d, mut w) = decoder(Arc::clone(&reports), counter.clone());
        let store = w.as_reader();
        apply(&mut d, &mut w, watcher::Event::Init);
        apply(&mut d, &mut w, watcher::Event::InitDone);
        apply(
            &mut d,
            &mut w,
            watcher::Event::Apply(cm("x", 1, json!({"a": "b"}))),
        );
        assert_eq!(store.len(), 1);

        let turned = apply(
            &mut d,
            &mut w,
            watcher::Event::Apply(cm("x", 2, json!({"forbidden": "1"}))),
        );
        assert!(matches!(turned, Some(watcher::Event::Delete(_))));
        assert_eq!(store.len(), 0);
        // A metadata-only update of the same generation is not reported again.
        apply(
            &mut d,
            &mut w,
            watcher::Event::Apply(cm("x", 2, json!({"forbidden": "1"}))),
        );
        assert_eq!(counter.get("ConfigMap"), 1);
        assert_eq!(
            reports.lock().unwrap().as_slice(),
            ["ConfigMap ns/x: data.forbidden: not allowed"]
        );

        apply(
            &mut d,
            &mut w,
            watcher::Event::Apply(cm("x", 3, json!({"a": "c"}))),
        );
        assert_eq!(store.len(), 1, "fixed, it is served again");
        // Deleting a bad object that was never stored yields nothing.
        let gone = apply(
            &mut d,
            &mut w,
            watcher::Event::Delete(cm("other", 1, json!({"a": 1}))),
        );
        assert!(gone.is_none());
    }
}
