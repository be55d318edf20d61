//! One reflector helper for every Kubernetes watch: a short bounded retry delay that resets
//! on success ([`QuickBackoff`], so a watch is back within about a second of the API server),
//! `managedFields` always trimmed (they are large and nobody here reads them), a reflector
//! store and the event stream that fills it.
//!
//! Kinds whose objects our types or validation may refuse (our CRDs) are watched with
//! [`reflect_checked`]: one bad object is skipped and reported, never failing a list or a
//! watch ([`checked`]).

pub mod backoff;
pub mod checked;
pub mod invalid_metric;

use std::fmt::Debug;
use std::hash::Hash;

use futures::Stream;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;

pub use backoff::QuickBackoff;
pub use checked::{CheckedKind, Checks, Invalid, reflect_checked};
pub use invalid_metric::InvalidObjects;

/// Watches `api` with `config` and mirrors it in a store. The returned stream must be
/// polled (spawned) for the store to fill; it retries with [`QuickBackoff`] and yields
/// every watcher event (errors included, for logging).
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, config)
            .backoff(QuickBackoff::default())
            .modify(|o| o.managed_fields_mut().clear()),
    );
    (store, stream)
}
