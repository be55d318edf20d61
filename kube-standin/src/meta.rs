//! Small accessors for `metadata` fields of untyped objects.

use serde_json::{Map, Value};

/// `metadata.<field>` as a string, "" when absent.
pub(crate) fn str_field<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or("")
}

/// The `metadata` map, created when absent (the object must be a JSON object).
pub(crate) fn metadata_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = object.as_object_mut()?;
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

/// Sets (or with `None` removes) `metadata.<field>`.
pub(crate) fn set(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(meta) = metadata_mut(object) {
        match value {
            Some(v) => {
                meta.insert(field.to_owned(), v);
            }
            None => {
                meta.remove(field);
            }
        }
    }
}

/// The finalizers, empty when absent.
pub(crate) fn finalizers(object: &Value) -> Vec<&str> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The uids named in `metadata.ownerReferences`.
pub(crate) fn owner_uids(object: &Value) -> Vec<&str> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["uid"].as_str()).collect())
        .unwrap_or_default()
}

/// Now, as the second-precision RFC 3339 UTC string Kubernetes uses.
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The object without `metadata` and `status`: what `generation` tracks.
pub(crate) fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// Sets (or with `None` removes) a top-level field such as `status`.
pub(crate) fn set_top(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(v) => {
                map.insert(field.to_owned(), v);
            }
            None => {
                map.remove(field);
            }
        }
    }
}
