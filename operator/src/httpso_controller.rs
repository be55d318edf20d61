//! The HTTPScaledObject controller: keeps one same-named ScaledObject per HTTPScaledObject
//! (compat §9), honours the skip and orphan annotations, holds the finalizer and writes the
//! `Ready` condition, `targetWorkload` and `targetService`.
//!
//! Before writing, the ScaledObject is checked for what KEDA's CRD refuses
//! ([`scaled_object::check`]); a refusal becomes `Ready=False` / `InvalidSpec` with a
//! one-sentence message and a Warning event, and nothing is applied. Condition messages and
//! events are written with `Display`, API errors as the server's own message.
//!
//! HTTPScaledObjects are watched object by object ([`reflect_checked`]): one that fails to
//! decode or validate never reaches the controller (so it cannot stop the list); it gets
//! `Ready=False` / `InvalidSpec`, a Warning event and a count in
//! `keda_http_invalid_objects_total{kind}`, and is reconciled normally once fixed.
//!
//! The ScaledObject is written with server-side apply under our field manager (forced), and
//! only when it differs from what we want in a field we own, so a hand edit of such a field is
//! reverted (the `.owns()` watch brings us back) while fields added by others are left alone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use keda_http_api::http_scaled_object::HTTPSO_FINALIZER;
use keda_http_api::{HTTPScaledObject, ScaledObject};
use keda_http_runtime::watch::{Checks, QuickBackoff, reflect_checked};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Outcome};
use crate::scaled_object::{self, DesiredError, InvalidSpec, Mode};
use crate::status::{self, Readiness};

/// Controller name in metrics and events.
pub const CONTROLLER: &str = "httpscaledobject";
/// Our server-side apply field manager.
pub const FIELD_MANAGER: &str = "keda-http-operator";

/// What went wrong in one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// An API call failed.
    #[error("{action}: {}", api_error_text(.source))]
    Kube {
        /// What we were doing.
        action: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The desired ScaledObject could not be built.
    #[error(transparent)]
    Desired(#[from] DesiredError),
    /// The desired ScaledObject is one KEDA refuses.
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpec),
    /// A same-named ScaledObject is controlled by another object.
    #[error("ScaledObject {name} is controlled by {owner}, not by this HTTPScaledObject")]
    ControlledByOther {
        /// ScaledObject name.
        name: String,
        /// `<kind>/<name>` of its controller.
        owner: String,
    },
    /// The object has no namespace (HTTPScaledObjects are namespaced).
    #[error("HTTPScaledObject has no namespace")]
    NoNamespace,
}

/// A reconcile error including the finalizer's own steps.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(#[from] Box<finalizer::Error<ReconcileError>>);

/// A client error as one line for conditions, events and logs: an API server refusal as its
/// code, reason and message (kube's own `Display` appends a `Debug` dump of the status).
pub fn api_error_text(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.reason.is_empty() => {
            format!(
                "the API server answered {}: {}",
                status.code, status.message
            )
        }
        kube::Error::Api(status) => format!(
            "the API server answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => other.to_string(),
    }
}

fn kube_err(action: &'static str) -> impl FnOnce(kube::Error) -> ReconcileError {
    move |source| ReconcileError::Kube { action, source }
}

/// Shared state of the controller.
pub struct Context {
    client: Client,
    scaler_address: String,
    metrics: Metrics,
    recorder: Recorder,
    /// HTTPScaledObjects (by uid) we already logged the deprecation warning for.
    warned: Mutex<HashSet<String>>,
    /// Consecutive failures per object, for the retry backoff.
    failures: Mutex<HashMap<ObjectRef<HTTPScaledObject>, u32>>,
}

impl Context {
    /// Context for a controller writing `scaler_address` into triggers.
    pub fn new(
        client: Client,
        scaler_address: String,
        metrics: Metrics,
        recorder: Recorder,
    ) -> Self {
        Self {
            client,
            scaler_address,
            metrics,
            recorder,
            warned: Mutex::default(),
            failures: Mutex::default(),
        }
    }
}

/// Runs the controller until `shutdown` is cancelled (then finishes in-flight reconciles).
pub async fn run(ctx: Arc<Context>, watch_namespace: Option<&str>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let scaled_objects: Api<ScaledObject> = match watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let (invalid_tx, invalid_rx) = tokio::sync::mpsc::unbounded_channel();
    let checks = Checks::new(|h: &HTTPScaledObject| h.spec.validate().map_err(|e| e.to_string()))
        .counted(ctx.metrics.invalid_objects())
        .on_invalid(move |invalid| {
            let _ = invalid_tx.send(invalid.clone());
        });
    let httpsos = reflect_checked(
        client.clone(),
        watch_namespace,
        watcher::Config::default().any_semantic(),
        writer,
        checks,
    );
    let mark_invalid = crate::mark_invalid_objects::<HTTPScaledObject>(
        client,
        ctx.recorder.clone(),
        invalid_rx,
        Some(HTTPSO_FINALIZER),
        shutdown.clone(),
    );
    let controller = Controller::for_stream(httpsos.applied_objects(), reader)
        .owns(scaled_objects, watcher::Config::default().any_semantic())
        .trigger_backoff(QuickBackoff::default());
    let store = controller.store();
    let driven = controller
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(controller = CONTROLLER, %error, "controller event");
            }
        });
    futures::join!(
        crate::drive_controller(driven, store, shutdown),
        mark_invalid
    );
}

/// One reconcile, timed and counted.
pub async fn reconcile(httpso: Arc<HTTPScaledObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = ObjectRef::from_obj(&*httpso);
    let result = reconcile_inner(httpso, &ctx).await;
    let outcome = if result.is_ok() {
        Outcome::Success
    } else {
        Outcome::Error
    };
    ctx.metrics.record(CONTROLLER, outcome, started.elapsed());
    if result.is_ok()
        && let Ok(mut failures) = ctx.failures.lock()
    {
        failures.remove(&key);
    }
    result
}

async fn reconcile_inner(httpso: Arc<HTTPScaledObject>, ctx: &Context) -> Result<Action, Error> {
    let namespace = httpso
        .namespace()
        .ok_or_else(|| Box::new(finalizer::Error::ApplyFailed(ReconcileError::NoNamespace)))?;
    let api: Api<HTTPScaledObject> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, HTTPSO_FINALIZER, httpso, |event| async {
        match event {
            finalizer::Event::Apply(h) => apply(&h, &api, ctx).await,
            finalizer::Event::Cleanup(h) => cleanup(&h, ctx).await,
        }
    })
    .await
    .map_err(|e| Error(Box::new(e)))
}

/// Retries with exponential backoff per object: 500ms, 1s, 2s, ... up to 5 minutes.
pub fn error_policy(httpso: Arc<HTTPScaledObject>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*httpso);
    let attempt = ctx
        .failures
        .lock()
        .map(|mut failures| {
            let n = failures.entry(key).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let delay = Duration::from_millis(500)
        .saturating_mul(1 << attempt.saturating_sub(1).min(10))
        .min(Duration::from_secs(300));
    tracing::warn!(
        controller = CONTROLLER,
        namespace = httpso.namespace().unwrap_or_default(),
        name = %httpso.name_any(),
        %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

async fn apply(
    httpso: &HTTPScaledObject,
    api: &Api<HTTPScaledObject>,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    warn_deprecated(httpso, ctx);
    let so_api: Api<ScaledObject> =
        Api::namespaced(ctx.client.clone(), &httpso.namespace().unwrap_or_default());
    let (readiness, failure) = if status::both_metrics_set(&httpso.spec) {
        let message = "spec.scalingMetric sets both concurrency and requestRate, which are \
                       mutually exclusive: set only one. The ScaledObject was not changed.";
        publish(
            ctx,
            httpso,
            EventType::Warning,
            status::REASON_INVALID_SCALING_METRIC,
            message,
        )
        .await;
        (
            Readiness::not_ready(status::REASON_INVALID_SCALING_METRIC, message),
            None,
        )
    } else {
        match scaled_object::mode(httpso) {
            Mode::Skip => match delete_owned(httpso, &so_api).await {
                Ok(()) => (
                    Readiness::ready(
                        status::REASON_SCALED_OBJECT_SKIPPED,
                        "ScaledObject creation skipped (annotation \
                         httpscaledobject.keda.sh/skip-scaledobject-creation)",
                    ),
                    None,
                ),
                Err(e) => (
                    Readiness::not_ready(
                        status::REASON_CREATE_ERROR,
                        format!("Failed to delete the owned ScaledObject: {e}"),
                    ),
                    Some(e),
                ),
            },
            Mode::Orphan => match orphan(httpso, &so_api).await {
                Ok(()) => (
                    Readiness::ready(
                        status::REASON_SCALED_OBJECT_ORPHANED,
                        "ScaledObject left unmanaged and without an owner reference (annotation \
                         httpscaledobject.keda.sh/orphan-scaledobject)",
                    ),
                    None,
                ),
                Err(e) => (
                    Readiness::not_ready(
                        status::REASON_CREATE_ERROR,
                        format!("Failed to orphan the ScaledObject: {e}"),
                    ),
                    Some(e),
                ),
            },
            Mode::Manage => match ensure(httpso, &so_api, ctx).await {
                Ok(()) => (
                    Readiness::ready(
                        status::REASON_RECONCILED,
                        "ScaledObject created and configured",
                    ),
                    None,
                ),
                // Retrying cannot help: the spec has to change, which brings us back.
                Err(ReconcileError::InvalidSpec(invalid)) => {
                    let message = invalid.to_string();
                    publish(
                        ctx,
                        httpso,
                        EventType::Warning,
                        status::REASON_INVALID_SPEC,
                        &message,
                    )
                    .await;
                    (
                        Readiness::not_ready(status::REASON_INVALID_SPEC, message),
                        None,
                    )
                }
                Err(e) => {
                    let message = format!("Failed to create scaled objects: {e}");
                    publish(
                        ctx,
                        httpso,
                        EventType::Warning,
                        status::REASON_CREATE_ERROR,
                        &message,
                    )
                    .await;
                    (
                        Readiness::not_ready(status::REASON_CREATE_ERROR, message),
                        Some(e),
                    )
                }
            },
        }
    };
    write_status(httpso, api, &readiness).await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(Action::await_change()),
    }
}

async fn cleanup(httpso: &HTTPScaledObject, ctx: &Context) -> Result<Action, ReconcileError> {
    let so_api: Api<ScaledObject> =
        Api::namespaced(ctx.client.clone(), &httpso.namespace().unwrap_or_default());
    match scaled_object::mode(httpso) {
        // The orphan annotation may have been set just before deletion: make sure the
        // ScaledObject loses our ownerReference before garbage collection can see it.
        Mode::Orphan => orphan(httpso, &so_api).await?,
        // Garbage collection would delete it too; doing it here does not depend on it.
        Mode::Manage | Mode::Skip => delete_owned(httpso, &so_api).await?,
    }
    Ok(Action::await_change())
}

/// Creates or updates the ScaledObject when it differs from the desired one.
async fn ensure(
    httpso: &HTTPScaledObject,
    so_api: &Api<ScaledObject>,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let desired = scaled_object::desired(httpso, &ctx.scaler_address)?;
    scaled_object::check(&desired)?;
    let name = httpso.name_any();
    let current = so_api
        .get_opt(&name)
        .await
        .map_err(kube_err("reading the ScaledObject"))?;
    if let Some(current) = &current {
        if !scaled_object::needs_apply(current, &desired) {
            return Ok(());
        }
        let uid = httpso.uid().unwrap_or_default();
        if let Some(other) = current
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.uid != uid)
        {
            return Err(ReconcileError::ControlledByOther {
                name,
                owner: format!("{}/{}", other.kind, other.name),
            });
        }
    }
    so_api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(kube_err("applying the ScaledObject"))?;
    let (reason, note) = if current.is_some() {
        (
            "ScaledObjectUpdated",
            format!("ScaledObject {name} updated"),
        )
    } else {
        (
            "ScaledObjectCreated",
            format!("ScaledObject {name} created"),
        )
    };
    tracing::info!(namespace = httpso.namespace().unwrap_or_default(), %name, reason, "applied ScaledObject");
    publish(ctx, httpso, EventType::Normal, reason, &note).await;
    Ok(())
}

/// Deletes the same-named ScaledObject if this HTTPScaledObject owns it.
async fn delete_owned(
    httpso: &HTTPScaledObject,
    so_api: &Api<ScaledObject>,
) -> Result<(), ReconcileError> {
    let name = httpso.name_any();
    let uid = httpso.uid().unwrap_or_default();
    let Some(current) = so_api
        .get_opt(&name)
        .await
        .map_err(kube_err("reading the ScaledObject"))?
    else {
        return Ok(());
    };
    if !scaled_object::is_owned_by(&current, &uid) || current.meta().deletion_timestamp.is_some() {
        return Ok(());
    }
    match so_api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {
            tracing::info!(namespace = httpso.namespace().unwrap_or_default(), %name, "deleted owned ScaledObject");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_err("deleting the ScaledObject")(e)),
    }
}

/// Removes our ownerReference from the same-named ScaledObject, if it has one. The patch is
/// guarded by the resourceVersion we read, so a concurrent change makes it fail and retry.
async fn orphan(
    httpso: &HTTPScaledObject,
    so_api: &Api<ScaledObject>,
) -> Result<(), ReconcileError> {
    let name = httpso.name_any();
    let uid = httpso.uid().unwrap_or_default();
    let Some(current) = so_api
        .get_opt(&name)
        .await
        .map_err(kube_err("reading the ScaledObject"))?
    else {
        return Ok(());
    };
    if !scaled_object::is_owned_by(&current, &uid) {
        return Ok(());
    }
    let kept: Vec<_> = current
        .owner_references()
        .iter()
        .filter(|o| o.uid != uid)
        .cloned()
        .collect();
    let patch = json!({
        "metadata": {
            "resourceVersion": current.resource_version(),
            "ownerReferences": if kept.is_empty() { serde_json::Value::Null } else { json!(kept) },
        }
    });
    so_api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err(
            "removing the ownerReference from the ScaledObject",
        ))?;
    tracing::info!(namespace = httpso.namespace().unwrap_or_default(), %name, "orphaned ScaledObject");
    Ok(())
}

async fn write_status(
    httpso: &HTTPScaledObject,
    api: &Api<HTTPScaledObject>,
    readiness: &Readiness,
) -> Result<(), ReconcileError> {
    let new = status::httpso_status(
        &httpso.spec,
        httpso.status.as_ref(),
        readiness,
        httpso.meta().generation,
        Timestamp::now(),
    );
    if httpso.status.as_ref() == Some(&new) {
        return Ok(());
    }
    api.patch_status(
        &httpso.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": new })),
    )
    .await
    .map_err(kube_err("writing the HTTPScaledObject status"))?;
    Ok(())
}

fn warn_deprecated(httpso: &HTTPScaledObject, ctx: &Context) {
    let uid = httpso.uid().unwrap_or_default();
    let first = ctx
        .warned
        .lock()
        .map(|mut w| w.insert(uid))
        .unwrap_or(false);
    if first {
        tracing::warn!(
            namespace = httpso.namespace().unwrap_or_default(),
            name = %httpso.name_any(),
            "WARNING: HTTPScaledObject is deprecated and will be removed in v1; migrate to \
             InterceptorRoute plus a ScaledObject"
        );
    }
}

async fn publish(
    ctx: &Context,
    httpso: &HTTPScaledObject,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &httpso.object_ref(&())).await {
        tracing::debug!(%error, "could not publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_as_the_server_message_without_a_debug_dump() {
        let status = kube::core::Status {
            code: 422,
            reason: "Invalid".to_owned(),
            message: "ScaledObject.keda.sh \"web\" is invalid: spec.maxReplicaCount: Invalid value"
                .to_owned(),
            ..Default::default()
        };
        let error = ReconcileError::Kube {
            action: "applying the ScaledObject",
            source: kube::Error::Api(Box::new(status)),
        };
        let text = error.to_string();
        assert_eq!(
            text,
            "applying the ScaledObject: the API server answered 422 Invalid: \
             ScaledObject.keda.sh \"web\" is invalid: spec.maxReplicaCount: Invalid value"
        );
        assert!(!text.contains("Status {"), "{text}");
    }
}
