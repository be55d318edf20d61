//! One reflector helper for every Kubernetes watch: kube's default backoff, `managedFields`
//! always trimmed (they are large and nobody here reads them), a reflector store and the
//! event stream that fills it.

use std::fmt::Debug;
use std::hash::Hash;

use futures::Stream;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;

/// Watches `api` with `config` and mirrors it in a store. The returned stream must be
/// polled (spawned) for the store to fill; it retries with kube's default backoff and
/// yields every watcher event (errors included, for logging).
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
            .default_backoff()
            .modify(|o| o.managed_fields_mut().clear()),
    );
    (store, stream)
}
