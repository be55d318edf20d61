//! Patch application: JSON merge patch (RFC 7386), JSON patch (RFC 6902), an approximation of
//! strategic merge patch, and the upsert-merge we use for server-side apply.
//!
//! Strategic merge patch is approximated as a JSON merge patch in which:
//! - lists of objects under a field with a known Kubernetes merge key are merged item by item
//!   on that key (`containers`, `initContainers`, `ephemeralContainers`, `volumes`, `env`,
//!   `imagePullSecrets` on `name`; `volumeMounts` on `mountPath`; `volumeDevices` on
//!   `devicePath`; `conditions` on `type`; `ownerReferences` on `uid`; `hostAliases` on `ip`;
//!   `ports` on `containerPort` when the items have it, else on `port`): a patch item replaces
//!   nothing, it is merged recursively into the item with the same key, or appended when no
//!   item has that key; a patch item with `"$patch": "delete"` removes the matching item;
//! - `finalizers` is merged as a set (union, existing order kept, new ones appended);
//! - every other list is replaced whole; `"$patch": "replace"` in an object replaces that
//!   object, `"$patch": "delete"` removes it; other `$`-directives (`$setElementOrder`,
//!   `$retainKeys`, `$deleteFromPrimitiveList`) are ignored.
//!
//! Server-side apply uses the same merge (with merge keys only for built-in groups; lists in
//! custom resources are replaced whole, i.e. treated as atomic): applied fields overwrite,
//! fields the applied configuration omits are kept, even if this field manager set them
//! before. There is no field ownership and so no conflict detection; `force` is accepted and
//! has no effect.

use serde_json::{Map, Value};

use super::error::ApiError;

/// RFC 7386 JSON merge patch, in place.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// How lists are merged by [`strategic_merge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMerge {
    /// Built-in kinds: merge keyed lists (see the module docs).
    MergeKeys,
    /// Custom resources under server-side apply: every list is replaced.
    Atomic,
}

/// The strategic-merge approximation described in the module docs, in place.
pub fn strategic_merge(target: &mut Value, patch: &Value, lists: ListMerge) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replacement = patch_map.clone();
            replacement.remove("$patch");
            *target = Value::Object(replacement);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    for (key, value) in patch_map {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            target_map.remove(key);
            continue;
        }
        let slot = target_map.entry(key.clone()).or_insert(Value::Null);
        match (value, &mut *slot) {
            (Value::Array(items), Value::Array(existing)) if lists == ListMerge::MergeKeys => {
                if key == "finalizers" {
                    for item in items {
                        if !existing.contains(item) {
                            existing.push(item.clone());
                        }
                    }
                } else if let Some(merge_key) = merge_key(key, items) {
                    merge_keyed_list(existing, items, merge_key, lists);
                } else {
                    *slot = Value::Array(strip_directives(items));
                }
            }
            (Value::Array(items), _) => *slot = Value::Array(strip_directives(items)),
            (Value::Object(_), _) => {
                strategic_merge(slot, value, lists);
                if slot.is_null() {
                    target_map.remove(key);
                }
            }
            _ => *slot = value.clone(),
        }
    }
}

fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

fn merge_keyed_list(existing: &mut Vec<Value>, items: &[Value], key: &str, lists: ListMerge) {
    for item in items {
        let Some(id) = item.get(key) else {
            existing.push(item.clone());
            continue;
        };
        let position = existing.iter().position(|e| e.get(key) == Some(id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut existing[i], item, lists),
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item, lists);
                existing.push(fresh);
            }
        }
    }
}

fn strip_directives(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
        .cloned()
        .collect()
}

/// RFC 6902 JSON patch (`add`, `remove`, `replace`, `move`, `copy`, `test`), applied to a copy;
/// a failed `test` or a missing path is a 422, as on a real server.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let Some(ops) = patch.as_array() else {
        return Err(ApiError::bad_request("json patch must be an array"));
    };
    let mut doc = target.clone();
    for op in ops {
        let name = op["op"].as_str().unwrap_or_default();
        let path = op["path"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("json patch operation without path"))?;
        match name {
            "add" => add(&mut doc, path, op["value"].clone())?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path)?;
                add(&mut doc, path, op["value"].clone())?;
            }
            "move" | "copy" => {
                let from = op["from"]
                    .as_str()
                    .ok_or_else(|| ApiError::bad_request("json patch move/copy without from"))?;
                let value = if name == "move" {
                    remove(&mut doc, from)?
                } else {
                    doc.pointer(from).cloned().ok_or_else(|| missing(from))?
                };
                add(&mut doc, path, value)?;
            }
            "test" => {
                // As on a real server, testing a missing path against `null` succeeds (kube-rs'
                // finalizer helper relies on it).
                if doc.pointer(path).unwrap_or(&Value::Null) != &op["value"] {
                    return Err(ApiError::invalid(format!(
                        "the server rejected our request due to an error in our request: test failed at {path}"
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown json patch operation \"{other}\""
                )));
            }
        }
    }
    Ok(doc)
}

fn missing(path: &str) -> ApiError {
    ApiError::invalid(format!("json patch: path {path} does not exist"))
}

fn split_pointer(path: &str) -> Result<(&str, String), ApiError> {
    let (parent, last) = path.rsplit_once('/').ok_or_else(|| missing(path))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            match last.parse::<usize>() {
                Ok(i) if i <= items.len() => {
                    items.insert(i, value);
                    Ok(())
                }
                _ => Err(missing(path)),
            }
        }
        _ => Err(missing(path)),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&last).ok_or_else(|| missing(path)),
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(missing(path)),
        },
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_removes_nulls_and_replaces_lists() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut t = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ], "finalizers": ["x"]}});
        let p = json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "c:1"}
        ], "finalizers": ["y", "x"]}});
        strategic_merge(&mut t, &p, ListMerge::MergeKeys);
        assert_eq!(
            t,
            json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "c", "image": "c:1"}
        ], "finalizers": ["x", "y"]}})
        );
    }

    #[test]
    fn atomic_lists_replace() {
        let mut t = json!({"containers": [{"name": "a"}]});
        strategic_merge(
            &mut t,
            &json!({"containers": [{"name": "b"}]}),
            ListMerge::Atomic,
        );
        assert_eq!(t, json!({"containers": [{"name": "b"}]}));
    }

    #[test]
    fn json_patch_ops() {
        let t = json!({"metadata": {"finalizers": ["a"]}});
        let p = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": ["a"]},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "b"},
            {"op": "remove", "path": "/metadata/finalizers/0"},
            {"op": "add", "path": "/x", "value": {"y": 1}},
            {"op": "replace", "path": "/x/y", "value": 2},
            {"op": "copy", "from": "/x", "path": "/z"},
            {"op": "move", "from": "/z", "path": "/w"},
        ]);
        assert_eq!(
            json_patch(&t, &p).unwrap(),
            json!({"metadata": {"finalizers": ["b"]}, "x": {"y": 2}, "w": {"y": 2}})
        );
        let absent = json!([{"op": "test", "path": "/metadata/missing", "value": null}]);
        assert_eq!(json_patch(&t, &absent).unwrap(), t);
        let failing = json!([{"op": "test", "path": "/metadata/finalizers", "value": []}]);
        assert_eq!(json_patch(&t, &failing).unwrap_err().code, 422);
    }
}
