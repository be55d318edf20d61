//! Checks a real API server makes on request bodies: type, namespace and name consistency,
//! name syntax, server-side apply requirements.

use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::kinds::ResourceKind;
use super::meta;
use super::write::WriteOptions;

/// Fills in `kind`/`apiVersion` (rejecting ones that do not match the URL) and ensures a
/// `metadata` map.
pub(super) fn normalise_type(kind: &ResourceKind, body: &mut Value) -> Result<(), ApiError> {
    let api_version = kind.api_version();
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != kind.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind \"{k}\" does not match the resource {} (kind {})",
                kind.plural, kind.kind
            )));
        }
        _ => {}
    }
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the apiVersion \"{v}\" does not match the request ({api_version})"
            )));
        }
        _ => {}
    }
    map.insert("kind".to_owned(), json!(kind.kind));
    map.insert("apiVersion".to_owned(), json!(api_version));
    if !map.get("metadata").is_some_and(Value::is_object) {
        map.insert("metadata".to_owned(), Value::Object(Map::new()));
    }
    Ok(())
}

/// The namespace a create lands in: the URL's (the body may repeat it, not contradict it);
/// "" for cluster-scoped kinds.
pub(super) fn resolve_namespace(
    kind: &ResourceKind,
    namespace: Option<&str>,
    body: &Value,
) -> Result<String, ApiError> {
    if !kind.namespaced {
        return Ok(String::new());
    }
    let in_body = meta::str_field(body, "namespace");
    match namespace {
        Some(ns) if !in_body.is_empty() && in_body != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        Some(ns) => Ok(ns.to_owned()),
        None => Err(ApiError::bad_request(format!(
            "{} is namespaced: create it under /namespaces/<namespace>/",
            kind.plural
        ))),
    }
}

/// What a real server requires of a server-side apply request.
pub(super) fn check_apply(
    kind: &ResourceKind,
    applied: &Value,
    name: &str,
    opts: &WriteOptions,
) -> Result<(), ApiError> {
    if opts.field_manager.is_none() {
        return Err(ApiError::invalid(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    if applied["apiVersion"].as_str().unwrap_or("").is_empty()
        || applied["kind"].as_str().unwrap_or("").is_empty()
    {
        return Err(ApiError::bad_request(
            "invalid object type: apiVersion and kind must be set in an apply patch",
        ));
    }
    check_body_name(kind, applied, name)
}

/// The body's `metadata.name`, when set, must be the URL's.
pub(super) fn check_body_name(
    kind: &ResourceKind,
    body: &Value,
    name: &str,
) -> Result<(), ApiError> {
    let in_body = meta::str_field(body, "name");
    if !in_body.is_empty() && in_body != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({in_body}) does not match the name on the URL ({name}) for {}",
            kind.plural
        )));
    }
    Ok(())
}

/// Names are lowercase RFC 1123 subdomains.
pub(super) fn validate_name(kind: &ResourceKind, name: &str) -> Result<(), ApiError> {
    let ok = name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            kind.kind
        )))
    }
}
