//! The object store: every object as a `serde_json::Value` keyed by resource
//! (group, version, plural) and (namespace, name), one global `resourceVersion` counter, and a
//! bounded ring buffer of change events that watches resume from.
//!
//! All writes happen under one mutex (never held across an `.await`), so each request sees and
//! produces a consistent state, and events are published to watchers in `resourceVersion`
//! order while the lock is held.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::defaults::{apply_defaults, random_suffix, record_manager};
use super::error::ApiError;
use super::kinds::{KindRegistry, ResourceKey, ResourceKind};
use super::meta;
use super::patch::{self, ListMerge};
use super::scale::scale_of;
use super::schema::{CrdSchema, schemas_from_crd};
use super::selectors::Selectors;
use super::validation::{
    check_apply, check_body_name, endpoint_slice_errors, label_errors, normalise_type,
    resolve_namespace, validate_name,
};
use super::write::{DeleteOptions, PatchBody, Subresource, WriteOptions};

/// (namespace, name); the namespace is "" for cluster-scoped objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace, "" when cluster-scoped.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed (finalizers, if any, are done).
    Deleted,
}

impl EventType {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as retained in history and sent to watchers.
#[derive(Debug)]
pub struct StoredEvent {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// Which resource.
    pub resource: ResourceKey,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for deletes: its final state).
    pub object: Arc<Value>,
    /// The object before the change, so that selector-filtered watches can turn a change
    /// that leaves or enters the selection into DELETED / ADDED.
    pub previous: Option<Arc<Value>>,
    encoded: OnceLock<Bytes>,
}

impl StoredEvent {
    /// `object` as JSON, encoded once and shared by every watcher.
    pub fn object_json(&self) -> &Bytes {
        self.encoded.get_or_init(|| {
            // Serialising a `Value` cannot fail.
            Bytes::from(serde_json::to_vec(&*self.object).unwrap_or_default())
        })
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The objects.
    pub items: Vec<Arc<Value>>,
    /// The list's resourceVersion.
    pub resource_version: u64,
    /// Continue token when more items remain.
    pub continue_token: Option<String>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// From the current state: the current objects first (resourceVersion "" or "0", or
    /// `sendInitialEvents=true`).
    Now,
    /// Every change after this resourceVersion.
    After(u64),
}

/// A registered watch: what to send first, and the live event feed.
#[derive(Debug)]
pub struct Subscription {
    /// Current objects of the resource (for `Since::Now`), unfiltered by selector.
    pub initial: Vec<Arc<Value>>,
    /// Retained events after the requested resourceVersion, for this resource.
    pub backlog: Vec<Arc<StoredEvent>>,
    /// Live events (all resources) after `start_rv`.
    pub receiver: broadcast::Receiver<Arc<StoredEvent>>,
    /// The resourceVersion the subscription is current at.
    pub start_rv: u64,
}

struct State {
    rv: u64,
    kinds: KindRegistry,
    objects: HashMap<ResourceKey, BTreeMap<ObjectKey, Arc<Value>>>,
    history: VecDeque<Arc<StoredEvent>>,
    /// Watches from a resourceVersion older than this get 410 Gone.
    compacted_rv: u64,
    history_capacity: usize,
    strategic_for_custom: bool,
    /// Services created so far: the source of cluster IPs.
    services_created: u32,
    /// Paginated lists in progress, oldest first.
    snapshots: VecDeque<Arc<ListSnapshot>>,
    next_snapshot: u64,
    /// The OpenAPI schemas of registered CRDs, by served resource.
    schemas: HashMap<ResourceKey, Arc<CrdSchema>>,
    /// Accept loopback addresses in EndpointSlices (a test-only relaxation).
    allow_loopback_endpoints: bool,
}

/// The objects of a paginated list as of its first page.
#[derive(Debug)]
struct ListSnapshot {
    id: u64,
    rv: u64,
    items: Vec<Arc<Value>>,
}

/// How many paginated lists may be in progress at once.
pub const MAX_LIST_SNAPSHOTS: usize = 1024;

fn parse_continue(token: &str) -> Result<(u64, usize), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token \"{token}\""));
    let mut parts = token.split('/');
    let (Some(_rv), Some(id), Some(offset), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok((
        id.parse().map_err(|_| bad())?,
        offset.parse().map_err(|_| bad())?,
    ))
}

/// The shared object store.
pub struct Store {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<StoredEvent>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

const NAMESPACES: (&str, &str, &str) = ("", "v1", "namespaces");
const FIRST_RV: u64 = 1000;

impl Store {
    /// A store with the built-in kinds, the usual namespaces, and room for `history_capacity`
    /// retained events (also the per-watcher buffer before a slow watcher is cut off).
    pub fn new(history_capacity: usize) -> Self {
        let capacity = history_capacity.max(16);
        let (events, _) = broadcast::channel(capacity);
        let store = Self {
            state: Mutex::new(State {
                rv: FIRST_RV,
                kinds: KindRegistry::builtin(),
                objects: HashMap::new(),
                history: VecDeque::with_capacity(capacity),
                compacted_rv: FIRST_RV,
                history_capacity: capacity,
                strategic_for_custom: false,
                services_created: 0,
                snapshots: VecDeque::new(),
                next_snapshot: 0,
                schemas: HashMap::new(),
                allow_loopback_endpoints: false,
            }),
            events,
        };
        let ns_kind = ResourceKind::cluster("", "v1", "Namespace", "namespaces").with_status();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            // Creating a fresh namespace in an empty store cannot fail.
            let _ = store.create(&ns_kind, None, body, &WriteOptions::default());
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accept strategic merge patches on custom resources too (applied with atomic lists,
    /// i.e. as a JSON merge patch). A real API server answers them with 415, which is the
    /// default here as well.
    pub fn set_strategic_merge_for_custom_resources(&self, allow: bool) {
        self.lock().strategic_for_custom = allow;
    }

    /// Accept loopback addresses (127.0.0.0/8, ::1) in EndpointSlices, which a real API server
    /// refuses. Only for test set-ups whose workloads cannot listen on routable addresses;
    /// link-local addresses stay refused.
    pub fn set_allow_loopback_endpoints(&self, allow: bool) {
        self.lock().allow_loopback_endpoints = allow;
    }

    /// Looks a served kind up.
    pub fn kind(&self, group: &str, version: &str, plural: &str) -> Option<ResourceKind> {
        self.lock().kinds.get(group, version, plural).cloned()
    }

    /// Looks a served kind up by group, version and kind name.
    pub fn find_kind(&self, group: &str, version: &str, kind: &str) -> Option<ResourceKind> {
        self.lock().kinds.find_kind(group, version, kind).cloned()
    }

    /// All served kinds.
    pub fn kinds(&self) -> Vec<ResourceKind> {
        self.lock().kinds.iter().cloned().collect()
    }

    /// Serves one more kind.
    pub fn register_kind(&self, kind: ResourceKind) {
        self.lock().kinds.register(kind);
    }

    /// The latest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// How many events history holds now (bounded by the capacity).
    pub fn history_len(&self) -> usize {
        self.lock().history.len()
    }

    /// Drops all retained history and paginated-list snapshots: a watch from any
    /// resourceVersion issued before this call, or a `continue` of a list started before it,
    /// gets 410 Gone. The resourceVersion moves on by one so that a list made after the
    /// compaction can be watched from.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.history.clear();
        st.snapshots.clear();
        st.rv += 1;
        st.compacted_rv = st.rv;
    }

    /// Creates an object (POST).
    pub fn create(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let created = self.create_locked(&mut st, kind, namespace, body, opts, "Update")?;
        Ok((*created).clone())
    }

    fn create_locked(
        &self,
        st: &mut State,
        kind: &ResourceKind,
        namespace: Option<&str>,
        mut body: Value,
        opts: &WriteOptions,
        operation: &str,
    ) -> Result<Arc<Value>, ApiError> {
        normalise_type(kind, &mut body)?;
        let namespace = resolve_namespace(kind, namespace, &body)?;
        let name = match meta::str_field(&body, "name") {
            "" => match meta::str_field(&body, "generateName") {
                "" => {
                    return Err(ApiError::invalid(format!(
                        "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                        kind.kind
                    )));
                }
                prefix => format!("{prefix}{}", random_suffix()),
            },
            name => name.to_owned(),
        };
        validate_name(kind, &name)?;
        if kind.namespaced {
            let ns_key = ResourceKey {
                group: NAMESPACES.0.to_owned(),
                version: NAMESPACES.1.to_owned(),
                plural: NAMESPACES.2.to_owned(),
            };
            let exists = st.objects.get(&ns_key).is_some_and(|m| {
                m.contains_key(&ObjectKey {
                    namespace: String::new(),
                    name: namespace.clone(),
                })
            });
            if !exists {
                return Err(ApiError::not_found("", "namespaces", &namespace));
            }
        }
        let key = ObjectKey {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        if st
            .objects
            .get(&kind.key())
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(ApiError::already_exists(&kind.group, &kind.plural, &name));
        }
        let rv = if opts.dry_run { st.rv } else { st.rv + 1 };
        meta::set(&mut body, "name", Some(json!(name)));
        if kind.namespaced {
            meta::set(&mut body, "namespace", Some(json!(namespace)));
        } else {
            meta::set(&mut body, "namespace", None);
        }
        meta::set(
            &mut body,
            "uid",
            Some(json!(uuid::Uuid::new_v4().to_string())),
        );
        meta::set(&mut body, "creationTimestamp", Some(json!(meta::now())));
        meta::set(&mut body, "generation", Some(json!(1)));
        meta::set(&mut body, "resourceVersion", Some(json!(rv.to_string())));
        meta::set(&mut body, "deletionTimestamp", None);
        meta::set(&mut body, "deletionGracePeriodSeconds", None);
        meta::set(&mut body, "managedFields", None);
        if kind.group.is_empty() && kind.plural == "services" {
            st.services_created += 1;
        }
        apply_defaults(kind, &mut body, st.services_created);
        admit(st, kind, &mut body, None, opts, Subresource::Main)?;
        if let Some(manager) = &opts.field_manager {
            record_manager(&mut body, kind, manager, operation, Subresource::Main);
        }
        let object = Arc::new(body);
        if opts.dry_run {
            return Ok(object);
        }
        st.rv = rv;
        st.objects
            .entry(kind.key())
            .or_default()
            .insert(key, object.clone());
        register_crd(st, kind, &object);
        self.emit(st, kind.key(), EventType::Added, object.clone(), None);
        Ok(object)
    }

    /// Reads one object (GET); for `Subresource::Scale` the `Scale` view.
    pub fn get(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
        sub: Subresource,
    ) -> Result<Value, ApiError> {
        let st = self.lock();
        let object = lookup(&st, kind, namespace, name)?;
        Ok(match sub {
            Subresource::Scale => scale_of(&object),
            _ => (*object).clone(),
        })
    }

    /// Lists objects (all namespaces when `namespace` is `None`), in (namespace, name) order.
    ///
    /// A paginated list is consistent, as with etcd: the first page takes a snapshot of the
    /// matching objects and the `continue` token pages through that snapshot, whatever changes
    /// meanwhile. Snapshots are bounded ([`MAX_LIST_SNAPSHOTS`], oldest dropped first) and
    /// dropped by compaction; continuing from a dropped one is a 410 Expired.
    pub fn list(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        selectors: &Selectors,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let mut st = self.lock();
        let limit = limit.filter(|l| *l > 0);
        let (snapshot, offset) = match continue_token {
            Some(token) => {
                let (id, offset) = parse_continue(token)?;
                let snapshot = st
                    .snapshots
                    .iter()
                    .find(|s| s.id == id)
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::gone(
                            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                        )
                    })?;
                (snapshot, offset)
            }
            None => {
                let items: Vec<Arc<Value>> = st
                    .objects
                    .get(&kind.key())
                    .map(|objects| {
                        objects
                            .iter()
                            .filter(|(key, object)| {
                                namespace.is_none_or(|ns| ns == key.namespace)
                                    && selectors.matches(object)
                            })
                            .map(|(_, object)| object.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                let whole = ListPage {
                    items,
                    resource_version: st.rv,
                    continue_token: None,
                };
                if limit.is_none_or(|l| whole.items.len() <= l) {
                    return Ok(whole);
                }
                st.next_snapshot += 1;
                let snapshot = Arc::new(ListSnapshot {
                    id: st.next_snapshot,
                    rv: whole.resource_version,
                    items: whole.items,
                });
                if st.snapshots.len() >= MAX_LIST_SNAPSHOTS {
                    st.snapshots.pop_front();
                }
                st.snapshots.push_back(snapshot.clone());
                (snapshot, 0)
            }
        };
        let end = limit.map_or(snapshot.items.len(), |l| {
            offset.saturating_add(l).min(snapshot.items.len())
        });
        let items = snapshot.items.get(offset..end).unwrap_or_default().to_vec();
        let continue_token = if end < snapshot.items.len() {
            Some(format!("{}/{}/{end}", snapshot.rv, snapshot.id))
        } else {
            st.snapshots.retain(|s| s.id != snapshot.id);
            None
        };
        Ok(ListPage {
            items,
            resource_version: snapshot.rv,
            continue_token,
        })
    }

    /// Replaces an object (PUT), on the main resource, `/status` or `/scale`.
    pub fn update(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
        sub: Subresource,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let current = lookup(&st, kind, namespace, name)?;
        if sub == Subresource::Scale {
            return self.write_scale(&mut st, kind, &current, body, opts);
        }
        let written = self.commit(&mut st, kind, &current, body, sub, opts, "Update")?;
        Ok((*written).clone())
    }

    /// Patches an object (PATCH); server-side apply creates it when missing.
    pub fn patch(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
        sub: Subresource,
        patch_body: PatchBody,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let current = match lookup(&st, kind, namespace, name) {
            Ok(current) => current,
            Err(e) => {
                let PatchBody::Apply(mut applied) = patch_body else {
                    return Err(e);
                };
                if sub != Subresource::Main {
                    return Err(e);
                }
                check_apply(kind, &applied, name, opts)?;
                meta::set(&mut applied, "name", Some(json!(name)));
                let created =
                    self.create_locked(&mut st, kind, namespace, applied, opts, "Apply")?;
                return Ok((*created).clone());
            }
        };
        let base = match sub {
            Subresource::Scale => scale_of(&current),
            _ => (*current).clone(),
        };
        let list_merge = if is_builtin_group(&kind.group) {
            ListMerge::MergeKeys
        } else {
            ListMerge::Atomic
        };
        let (patched, operation) = match &patch_body {
            PatchBody::Merge(p) => {
                let mut t = base;
                patch::merge_patch(&mut t, p);
                (t, "Update")
            }
            PatchBody::Strategic(p) => {
                if !is_builtin_group(&kind.group) && !st.strategic_for_custom {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json (not supported for custom resources)",
                    ));
                }
                let mut t = base;
                patch::strategic_merge(&mut t, p, list_merge);
                (t, "Update")
            }
            PatchBody::Json(p) => (patch::json_patch(&base, p)?, "Update"),
            PatchBody::Apply(p) => {
                check_apply(kind, p, name, opts)?;
                let mut t = base;
                patch::strategic_merge(&mut t, p, list_merge);
                (t, "Apply")
            }
        };
        if sub == Subresource::Scale {
            return self.write_scale(&mut st, kind, &current, patched, opts);
        }
        let written = self.commit(&mut st, kind, &current, patched, sub, opts, operation)?;
        Ok((*written).clone())
    }

    fn write_scale(
        &self,
        st: &mut State,
        kind: &ResourceKind,
        current: &Arc<Value>,
        scale: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let name = meta::str_field(current, "name").to_owned();
        let requested_rv = meta::str_field(&scale, "resourceVersion");
        if !requested_rv.is_empty() && requested_rv != meta::str_field(current, "resourceVersion") {
            return Err(stale(kind, &name));
        }
        let replicas = match &scale["spec"]["replicas"] {
            Value::Null => 0,
            v => v
                .as_i64()
                .filter(|r| *r >= 0)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "Scale.autoscaling \"{name}\" is invalid: spec.replicas: must be a non-negative integer"
                    ))
                })?,
        };
        let mut next = (**current).clone();
        if let Some(map) = next.as_object_mut() {
            let spec = map.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                spec.insert("replicas".to_owned(), json!(replicas));
            }
        }
        let written = self.commit(st, kind, current, next, Subresource::Main, opts, "Update")?;
        Ok(scale_of(&written))
    }

    /// The common replace path: resourceVersion precondition, status/spec separation,
    /// immutable metadata, generation, no-op detection, finalizer completion.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        st: &mut State,
        kind: &ResourceKind,
        current: &Arc<Value>,
        mut next: Value,
        sub: Subresource,
        opts: &WriteOptions,
        operation: &str,
    ) -> Result<Arc<Value>, ApiError> {
        let name = meta::str_field(current, "name").to_owned();
        if !next.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let requested_rv = meta::str_field(&next, "resourceVersion");
        let current_rv = meta::str_field(current, "resourceVersion");
        if !requested_rv.is_empty() && requested_rv != current_rv {
            return Err(stale(kind, &name));
        }
        check_body_name(kind, &next, &name)?;
        if kind.namespaced {
            let ns = meta::str_field(&next, "namespace");
            if !ns.is_empty() && ns != meta::str_field(current, "namespace") {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        normalise_type(kind, &mut next)?;
        let mut next = match sub {
            Subresource::Status => {
                let mut only_status = (**current).clone();
                meta::set_top(&mut only_status, "status", next.get("status").cloned());
                only_status
            }
            _ => {
                if kind.status_subresource {
                    meta::set_top(&mut next, "status", current.get("status").cloned());
                }
                next
            }
        };
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            meta::set(&mut next, field, current["metadata"].get(field).cloned());
        }
        if meta::spec_part(&next) != meta::spec_part(current) {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            meta::set(&mut next, "generation", Some(json!(generation)));
        }
        if next
            .get("metadata")
            .and_then(|m| m.get("managedFields"))
            .is_none()
        {
            meta::set(
                &mut next,
                "managedFields",
                current["metadata"].get("managedFields").cloned(),
            );
        }
        admit(st, kind, &mut next, Some(current), opts, sub)?;
        if next == **current {
            return Ok(current.clone());
        }
        if let Some(manager) = &opts.field_manager {
            record_manager(&mut next, kind, manager, operation, sub);
        }
        if opts.dry_run {
            return Ok(Arc::new(next));
        }
        let deleting = current["metadata"].get("deletionTimestamp").is_some();
        st.rv += 1;
        let rv = st.rv;
        meta::set(&mut next, "resourceVersion", Some(json!(rv.to_string())));
        let next = Arc::new(next);
        let key = object_key(&next);
        if deleting && meta::finalizers(&next).is_empty() {
            if let Some(objects) = st.objects.get_mut(&kind.key()) {
                objects.remove(&key);
            }
            self.emit(
                st,
                kind.key(),
                EventType::Deleted,
                next.clone(),
                Some(current.clone()),
            );
            let uid = meta::str_field(&next, "uid").to_owned();
            self.collect_garbage(st, vec![uid]);
            return Ok(next);
        }
        st.objects
            .entry(kind.key())
            .or_default()
            .insert(key, next.clone());
        register_crd(st, kind, &next);
        self.emit(
            st,
            kind.key(),
            EventType::Modified,
            next.clone(),
            Some(current.clone()),
        );
        Ok(next)
    }

    /// Deletes an object (DELETE): with finalizers it only gets a `deletionTimestamp`;
    /// without, it is removed and its dependents are garbage-collected.
    pub fn delete(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let current = lookup(&st, kind, namespace, name)?;
        if let Some(rv) = &opts.precondition_rv
            && rv != meta::str_field(&current, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &kind.group,
                &kind.plural,
                name,
                "Precondition failed: ResourceVersion mismatch",
            ));
        }
        if let Some(uid) = &opts.precondition_uid
            && uid != meta::str_field(&current, "uid")
        {
            return Err(ApiError::conflict(
                &kind.group,
                &kind.plural,
                name,
                "Precondition failed: UID mismatch",
            ));
        }
        if opts.dry_run {
            return Ok((*current).clone());
        }
        let mut removed = Vec::new();
        let result = self.delete_locked(&mut st, kind, &current, &mut removed);
        if !opts.orphan {
            self.collect_garbage(&mut st, removed);
        }
        Ok((*result).clone())
    }

    /// Deletes every object of a kind in a namespace (or everywhere) that matches.
    pub fn delete_collection(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        selectors: &Selectors,
    ) -> Vec<Value> {
        let mut st = self.lock();
        let targets: Vec<Arc<Value>> = st
            .objects
            .get(&kind.key())
            .map(|m| {
                m.iter()
                    .filter(|(k, o)| {
                        namespace.is_none_or(|ns| ns == k.namespace) && selectors.matches(o)
                    })
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut removed = Vec::new();
        let out = targets
            .iter()
            .map(|o| (*self.delete_locked(&mut st, kind, o, &mut removed)).clone())
            .collect();
        self.collect_garbage(&mut st, removed);
        out
    }

    /// Marks or removes one object; uids of removed objects are pushed onto `removed`.
    fn delete_locked(
        &self,
        st: &mut State,
        kind: &ResourceKind,
        current: &Arc<Value>,
        removed: &mut Vec<String>,
    ) -> Arc<Value> {
        let key = object_key(current);
        if !meta::finalizers(current).is_empty() {
            if current["metadata"].get("deletionTimestamp").is_some() {
                return current.clone();
            }
            st.rv += 1;
            let mut next = (**current).clone();
            meta::set(&mut next, "deletionTimestamp", Some(json!(meta::now())));
            meta::set(&mut next, "deletionGracePeriodSeconds", Some(json!(0)));
            meta::set(&mut next, "resourceVersion", Some(json!(st.rv.to_string())));
            let next = Arc::new(next);
            st.objects
                .entry(kind.key())
                .or_default()
                .insert(key, next.clone());
            self.emit(
                st,
                kind.key(),
                EventType::Modified,
                next.clone(),
                Some(current.clone()),
            );
            return next;
        }
        st.rv += 1;
        let mut last = (**current).clone();
        meta::set(&mut last, "resourceVersion", Some(json!(st.rv.to_string())));
        let last = Arc::new(last);
        if let Some(objects) = st.objects.get_mut(&kind.key()) {
            objects.remove(&key);
        }
        self.emit(
            st,
            kind.key(),
            EventType::Deleted,
            last.clone(),
            Some(current.clone()),
        );
        removed.push(meta::str_field(current, "uid").to_owned());
        if kind.group.is_empty() && kind.plural == "namespaces" {
            let ns = meta::str_field(current, "name").to_owned();
            self.delete_namespace_contents(st, &ns, removed);
        }
        last
    }

    fn delete_namespace_contents(&self, st: &mut State, ns: &str, removed: &mut Vec<String>) {
        let kinds: Vec<ResourceKind> = st.kinds.iter().filter(|k| k.namespaced).cloned().collect();
        for kind in kinds {
            let objects: Vec<Arc<Value>> = st
                .objects
                .get(&kind.key())
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| k.namespace == ns)
                        .map(|(_, o)| o.clone())
                        .collect()
                })
                .unwrap_or_default();
            for object in objects {
                self.delete_locked(st, &kind, &object, removed);
            }
        }
    }

    /// Background garbage collection, done synchronously: an object that names a removed
    /// owner in `ownerReferences` and has no remaining live owner is deleted (which honours
    /// its own finalizers), transitively.
    fn collect_garbage(&self, st: &mut State, mut removed: Vec<String>) {
        while !removed.is_empty() {
            let gone: BTreeSet<String> = removed.drain(..).collect();
            let live: BTreeSet<String> = st
                .objects
                .values()
                .flat_map(|m| m.values())
                .map(|o| meta::str_field(o, "uid").to_owned())
                .collect();
            let kinds: Vec<ResourceKind> = st.kinds.iter().cloned().collect();
            for kind in kinds {
                let dependents: Vec<Arc<Value>> = st
                    .objects
                    .get(&kind.key())
                    .map(|m| {
                        m.values()
                            .filter(|o| {
                                let owners = meta::owner_uids(o);
                                owners.iter().any(|u| gone.contains(*u))
                                    && owners.iter().all(|u| !live.contains(*u))
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for dependent in dependents {
                    self.delete_locked(st, &kind, &dependent, &mut removed);
                }
            }
        }
    }

    /// Registers a watch on a resource, atomically with reading the state it starts from.
    pub fn subscribe(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        since: Since,
    ) -> Result<Subscription, ApiError> {
        let st = self.lock();
        let receiver = self.events.subscribe();
        let resource = kind.key();
        let mut initial = Vec::new();
        let mut backlog = Vec::new();
        match since {
            Since::Now => {
                if let Some(objects) = st.objects.get(&resource) {
                    initial = objects
                        .iter()
                        .filter(|(k, _)| namespace.is_none_or(|ns| ns == k.namespace))
                        .map(|(_, o)| o.clone())
                        .collect();
                }
            }
            Since::After(rv) => {
                if rv < st.compacted_rv {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        st.compacted_rv
                    )));
                }
                backlog = st
                    .history
                    .iter()
                    .filter(|e| e.rv > rv && e.resource == resource)
                    .cloned()
                    .collect();
            }
        }
        Ok(Subscription {
            initial,
            backlog,
            receiver,
            start_rv: st.rv,
        })
    }

    fn emit(
        &self,
        st: &mut State,
        resource: ResourceKey,
        kind: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let event = Arc::new(StoredEvent {
            rv: st.rv,
            resource,
            kind,
            object,
            previous,
            encoded: OnceLock::new(),
        });
        if st.history.len() >= st.history_capacity
            && let Some(evicted) = st.history.pop_front()
        {
            st.compacted_rv = evicted.rv;
        }
        st.history.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }
}

fn is_crd(kind: &ResourceKind) -> bool {
    kind.group == "apiextensions.k8s.io" && kind.plural == "customresourcedefinitions"
}

/// Serves the kinds a stored CRD declares and enforces their schemas.
fn register_crd(st: &mut State, kind: &ResourceKind, crd: &Value) {
    if !is_crd(kind) {
        return;
    }
    for k in KindRegistry::kinds_from_crd(crd) {
        st.kinds.register(k);
    }
    // `admit` refused CRDs whose schemas do not compile before they got here.
    if let Ok(schemas) = schemas_from_crd(crd) {
        st.schemas.extend(schemas);
    }
}

/// What a real server checks of every object it stores, after defaulting: label syntax,
/// EndpointSlice addresses, a CRD's own schemas, and a custom resource against its CRD's
/// schema and CEL rules (which may prune unknown fields from `object`).
fn admit(
    st: &State,
    kind: &ResourceKind,
    object: &mut Value,
    old: Option<&Value>,
    opts: &WriteOptions,
    sub: Subresource,
) -> Result<(), ApiError> {
    let name = meta::str_field(object, "name").to_owned();
    let mut errors = label_errors(object);
    if kind.group == "discovery.k8s.io" && kind.plural == "endpointslices" {
        errors.extend(endpoint_slice_errors(object, st.allow_loopback_endpoints));
    }
    if is_crd(kind)
        && let Err(crd_errors) = schemas_from_crd(object)
    {
        errors.extend(crd_errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(
            &kind.group,
            &kind.kind,
            &name,
            errors,
        ));
    }
    if let Some(schema) = st.schemas.get(&kind.key()) {
        schema
            .admit(
                object,
                old,
                opts.field_validation,
                sub == Subresource::Status,
            )
            .map_err(|failure| failure.into_api_error(schema, &name))?;
    }
    Ok(())
}

fn lookup(
    st: &State,
    kind: &ResourceKind,
    namespace: Option<&str>,
    name: &str,
) -> Result<Arc<Value>, ApiError> {
    let key = ObjectKey {
        namespace: if kind.namespaced {
            namespace.unwrap_or("").to_owned()
        } else {
            String::new()
        },
        name: name.to_owned(),
    };
    st.objects
        .get(&kind.key())
        .and_then(|m| m.get(&key))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&kind.group, &kind.plural, name))
}

fn object_key(object: &Value) -> ObjectKey {
    ObjectKey {
        namespace: meta::str_field(object, "namespace").to_owned(),
        name: meta::str_field(object, "name").to_owned(),
    }
}

fn stale(kind: &ResourceKind, name: &str) -> ApiError {
    ApiError::conflict(
        &kind.group,
        &kind.plural,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

/// Built-in groups get strategic merge; custom resources do not (as on a real server).
fn is_builtin_group(group: &str) -> bool {
    group.is_empty() || group == "apps" || group.ends_with(".k8s.io")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm_kind() -> ResourceKind {
        ResourceKind::namespaced("", "v1", "ConfigMap", "configmaps")
    }

    #[test]
    fn history_is_bounded_and_compaction_moves_forward() {
        let store = Store::new(16);
        for i in 0..50 {
            let body = json!({"metadata": {"name": format!("c{i}")}});
            store
                .create(&cm_kind(), Some("default"), body, &WriteOptions::default())
                .unwrap();
        }
        assert_eq!(store.history_len(), 16);
        let err = store
            .subscribe(&cm_kind(), None, Since::After(FIRST_RV))
            .unwrap_err();
        assert_eq!(err.code, 410);
        let recent = store.current_rv() - 3;
        let sub = store
            .subscribe(&cm_kind(), None, Since::After(recent))
            .unwrap();
        assert_eq!(sub.backlog.len(), 3);
    }

    #[test]
    fn noop_update_keeps_resource_version() {
        let store = Store::new(16);
        let created = store
            .create(
                &cm_kind(),
                Some("default"),
                json!({"metadata": {"name": "a"}, "data": {"k": "v"}}),
                &WriteOptions::default(),
            )
            .unwrap();
        let again = store
            .update(
                &cm_kind(),
                Some("default"),
                "a",
                Subresource::Main,
                created.clone(),
                &WriteOptions::default(),
            )
            .unwrap();
        assert_eq!(again, created);
    }
}
