//! The OpenAPI v3 schemas of registered CustomResourceDefinitions, enforced on every write as
//! a real API server enforces them: unknown fields, `nullable`, types (including
//! `x-kubernetes-int-or-string`), `enum`, `pattern`, `minLength`/`maxLength`,
//! `minimum`/`maximum` (and their exclusive forms), `minItems`/`maxItems`,
//! `minProperties`/`maxProperties`, `required`, and the CEL rules of
//! `x-kubernetes-validations` (evaluated by `kube-cel`, with schema defaults applied first).
//!
//! Unknown fields follow the request's `fieldValidation`, as on a real server: `Strict`
//! (kubectl's default) refuses the object with 400 BadRequest
//! (`strict decoding error: unknown field "spec.x"`); `Warn` (the server's default when the
//! parameter is absent, which is what kube-rs sends) and `Ignore` prune them and store the
//! rest. Fields under `x-kubernetes-preserve-unknown-fields: true` or an
//! `additionalProperties` schema are kept. Nulls in fields that are not `nullable` are pruned.
//! Schema violations and failed CEL rules are 422 Invalid with one cause per field.
//!
//! Simplified: `format`, `uniqueItems`, `allOf`/`anyOf`/`oneOf`/`not`, list-type uniqueness
//! and ratcheting are not checked (for `/status` writes only errors under `status` count, so
//! an object stored before its CRD was tightened can still get a status); defaults are used
//! for CEL evaluation but not stored.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use super::error::{ApiError, FieldError};
use super::kinds::ResourceKey;
use super::write::FieldValidation;

/// The schema of one served version of a custom resource.
pub(crate) struct CrdSchema {
    group: String,
    version: String,
    kind: String,
    root: Value,
    /// Every `pattern` of the schema, compiled once.
    patterns: HashMap<String, Regex>,
}

impl std::fmt::Debug for CrdSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdSchema")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The schemas a CustomResourceDefinition declares, one per served version that has one; or
/// the reasons the CRD itself is invalid (a pattern that does not compile, a CEL rule that
/// does not parse), which a real server refuses with 422.
pub(crate) fn schemas_from_crd(
    crd: &Value,
) -> Result<Vec<(ResourceKey, Arc<CrdSchema>)>, Vec<FieldError>> {
    let spec = &crd["spec"];
    let (Some(group), Some(kind), Some(plural)) = (
        spec["group"].as_str(),
        spec["names"]["kind"].as_str(),
        spec["names"]["plural"].as_str(),
    ) else {
        return Ok(Vec::new());
    };
    let mut schemas = Vec::new();
    let mut errors = Vec::new();
    let versions = spec["versions"].as_array().map_or(&[][..], Vec::as_slice);
    for (i, version) in versions.iter().enumerate() {
        let (Some(name), Some(root)) = (
            version["name"].as_str(),
            version["schema"]["openAPIV3Schema"].as_object(),
        ) else {
            continue;
        };
        let root = Value::Object(root.clone());
        let field = format!("spec.versions[{i}].schema.openAPIV3Schema");
        let mut patterns = HashMap::new();
        collect_patterns(&root, &field, &mut patterns, &mut errors);
        rule_errors(&kube_cel::compile_schema(&root), &field, &mut errors);
        schemas.push((
            ResourceKey {
                group: group.to_owned(),
                version: name.to_owned(),
                plural: plural.to_owned(),
            },
            Arc::new(CrdSchema {
                group: group.to_owned(),
                version: name.to_owned(),
                kind: kind.to_owned(),
                root,
                patterns,
            }),
        ));
    }
    if errors.is_empty() {
        Ok(schemas)
    } else {
        Err(errors)
    }
}

/// The CEL rules of every node that do not compile.
fn rule_errors(node: &kube_cel::CompiledSchema, field: &str, errors: &mut Vec<FieldError>) {
    for problem in node.compilation_errors() {
        errors.push(FieldError::invalid(
            format!("{field}.x-kubernetes-validations"),
            &Value::String(String::new()),
            format!(
                "compilation failed: {}",
                problem
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ));
    }
    for (name, child) in &node.properties {
        rule_errors(child, &format!("{field}.properties[{name}]"), errors);
    }
    if let Some(items) = &node.items {
        rule_errors(items, &format!("{field}.items"), errors);
    }
    if let Some(additional) = &node.additional_properties {
        rule_errors(additional, &format!("{field}.additionalProperties"), errors);
    }
}

fn collect_patterns(
    schema: &Value,
    field: &str,
    patterns: &mut HashMap<String, Regex>,
    errors: &mut Vec<FieldError>,
) {
    let Some(map) = schema.as_object() else {
        return;
    };
    if let Some(pattern) = map.get("pattern").and_then(Value::as_str) {
        match Regex::new(pattern) {
            Ok(re) => {
                patterns.insert(pattern.to_owned(), re);
            }
            Err(e) => errors.push(FieldError::invalid(
                format!("{field}.pattern"),
                &Value::String(pattern.to_owned()),
                format!(
                    "must be a valid regular expression: {}",
                    e.to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            )),
        }
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            collect_patterns(
                prop,
                &format!("{field}.properties[{name}]"),
                patterns,
                errors,
            );
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = map.get(key) {
            collect_patterns(sub, &format!("{field}.{key}"), patterns, errors);
        }
    }
}

/// Why an object does not fit its schema.
#[derive(Debug)]
pub(crate) enum SchemaFailure {
    /// `fieldValidation=Strict` and these fields are not declared.
    Unknown(Vec<String>),
    /// Schema or CEL violations.
    Invalid(Vec<FieldError>),
}

impl SchemaFailure {
    /// The error the real server answers with for this object.
    pub(crate) fn into_api_error(self, schema: &CrdSchema, name: &str) -> ApiError {
        match self {
            Self::Unknown(fields) => {
                let listed = fields
                    .iter()
                    .map(|f| format!("unknown field {f:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                ApiError::bad_request(format!(
                    "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {listed}",
                    kind = schema.kind,
                    version = schema.version,
                ))
            }
            Self::Invalid(errors) => {
                ApiError::invalid_fields(&schema.group, &schema.kind, name, errors)
            }
        }
    }
}

impl CrdSchema {
    /// Checks `object` (pruning unknown fields and non-nullable nulls unless `mode` is
    /// `Strict`), then runs the CEL rules with `old` as `oldSelf`. `status_only` keeps only
    /// the errors under `status` (a `/status` write).
    pub(crate) fn admit(
        &self,
        object: &mut Value,
        old: Option<&Value>,
        mode: FieldValidation,
        status_only: bool,
    ) -> Result<(), SchemaFailure> {
        let mut walk = Walk {
            patterns: &self.patterns,
            errors: Vec::new(),
            unknown: Vec::new(),
        };
        walk.value(&self.root, object, "");
        if mode == FieldValidation::Strict && !walk.unknown.is_empty() {
            return Err(SchemaFailure::Unknown(walk.unknown));
        }
        let keep =
            |e: &FieldError| !status_only || e.field == "status" || e.field.starts_with("status.");
        let mut errors: Vec<FieldError> = walk.errors.into_iter().filter(keep).collect();
        if errors.is_empty() {
            let context = kube_cel::RootContext {
                api_version: format!("{}/{}", self.group, self.version),
                api_group: self.group.clone(),
                kind: self.kind.clone(),
            };
            if let Err(failed) = kube_cel::Validator::new().validate_with_context(
                &self.root,
                object,
                old,
                Some(&context),
            ) {
                for e in failed.into_vec() {
                    let value = value_at(object, &e.field_path).unwrap_or(&Value::Null);
                    let message = match e.kind {
                        kube_cel::ErrorKind::ValidationFailure => e.message.clone(),
                        _ => format!("rule {:?} could not be evaluated: {}", e.rule, e.message),
                    };
                    errors.push(FieldError::invalid(e.field_path.clone(), value, message));
                }
                errors.retain(keep);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SchemaFailure::Invalid(errors))
        }
    }
}

/// The value at a dotted field path (`spec.a.b`, `spec.list[0]`), if there is one.
fn value_at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = object;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        current = current.get(name)?;
        if let Some(i) = index {
            current = current.get(i)?;
        }
    }
    Some(current)
}

struct Walk<'a> {
    patterns: &'a HashMap<String, Regex>,
    errors: Vec<FieldError>,
    unknown: Vec<String>,
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

impl Walk<'_> {
    fn invalid(&mut self, path: &str, value: &Value, detail: String) {
        self.errors.push(FieldError::invalid(path, value, detail));
    }

    fn value(&mut self, schema: &Value, value: &mut Value, path: &str) {
        let int_or_string = flag(schema, "x-kubernetes-int-or-string");
        let declared = schema.get("type").and_then(Value::as_str);
        let actual = type_name(value);
        let type_ok = match declared {
            _ if int_or_string => matches!(actual, "integer" | "string"),
            None => true,
            Some("number") => matches!(actual, "number" | "integer"),
            Some(t) => t == actual,
        };
        if !type_ok {
            let expected = if int_or_string {
                "integer or string"
            } else {
                declared.unwrap_or("")
            };
            self.errors.push(FieldError::other(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
                ),
            ));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let listed = allowed
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let shown = match &*value {
                Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            };
            self.errors.push(FieldError::other(
                "FieldValueNotSupported",
                path,
                format!("Unsupported value: {shown}: supported values: {listed}"),
            ));
        }
        match value {
            Value::Object(_) => self.object(schema, value, path),
            Value::Array(items) => {
                self.count(schema, path, items.len(), "minItems", "maxItems", "items");
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter_mut().enumerate() {
                        self.value(item_schema, item, &format!("{path}[{i}]"));
                    }
                }
            }
            Value::String(s) => {
                let s = s.clone();
                self.string(schema, &s, path);
            }
            Value::Number(_) => self.number(schema, value, path),
            _ => {}
        }
    }

    fn count(&mut self, schema: &Value, path: &str, n: usize, min: &str, max: &str, what: &str) {
        let n = n as u64;
        if let Some(limit) = schema.get(min).and_then(Value::as_u64)
            && n < limit
        {
            self.invalid(
                path,
                &Value::from(n),
                format!("{path} in body should have at least {limit} {what}"),
            );
        }
        if let Some(limit) = schema.get(max).and_then(Value::as_u64)
            && n > limit
        {
            self.errors.push(FieldError::other(
                "FieldValueTooMany",
                path,
                format!("Too many: {n}: must have at most {limit} {what}"),
            ));
        }
    }

    fn string(&mut self, schema: &Value, s: &str, path: &str) {
        let value = Value::String(s.to_owned());
        let chars = s.chars().count() as u64;
        if let Some(limit) = schema.get("maxLength").and_then(Value::as_u64)
            && chars > limit
        {
            self.errors.push(FieldError::other(
                "FieldValueTooLong",
                path,
                format!("Too long: may not be more than {limit} bytes"),
            ));
        }
        if let Some(limit) = schema.get("minLength").and_then(Value::as_u64)
            && chars < limit
        {
            self.invalid(
                path,
                &value,
                format!("{path} in body should be at least {limit} chars long"),
            );
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && let Some(re) = self.patterns.get(pattern)
            && !re.is_match(s)
        {
            self.invalid(
                path,
                &value,
                format!("{path} in body should match '{pattern}'"),
            );
        }
    }

    fn number(&mut self, schema: &Value, value: &Value, path: &str) {
        let Some(n) = value.as_f64() else {
            return;
        };
        let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
        let exclusive = |key: &str| flag(schema, key);
        if let Some(min) = bound("minimum") {
            if exclusive("exclusiveMinimum") && n <= min {
                self.invalid(
                    path,
                    value,
                    format!("{path} in body should be greater than {min}"),
                );
            } else if n < min {
                self.invalid(
                    path,
                    value,
                    format!("{path} in body should be greater than or equal to {min}"),
                );
            }
        }
        if let Some(max) = bound("maximum") {
            if exclusive("exclusiveMaximum") && n >= max {
                self.invalid(
                    path,
                    value,
                    format!("{path} in body should be less than {max}"),
                );
            } else if n > max {
                self.invalid(
                    path,
                    value,
                    format!("{path} in body should be less than or equal to {max}"),
                );
            }
        }
    }

    fn object(&mut self, schema: &Value, value: &mut Value, path: &str) {
        let Some(map) = value.as_object_mut() else {
            return;
        };
        let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            // The root's type and object metadata are checked by the server, not the schema.
            if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            let field = join(path, &key);
            let sub_schema = properties
                .and_then(|p| p.get(&key))
                .or_else(|| additional.filter(|a| a.is_object()));
            match sub_schema {
                Some(sub) => {
                    let is_null = map.get(&key).is_some_and(Value::is_null);
                    if is_null && !flag(sub, "nullable") {
                        map.remove(&key);
                    } else if let Some(child) = map.get_mut(&key) {
                        let field = if properties.is_some_and(|p| p.contains_key(&key)) {
                            field
                        } else {
                            format!("{path}[{key}]")
                        };
                        self.value(sub, child, &field);
                    }
                }
                None if preserve || additional.and_then(Value::as_bool) == Some(true) => {}
                None => {
                    self.unknown.push(field);
                    map.remove(&key);
                }
            }
        }
        let present = map.len();
        let missing: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|required| {
                required
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|r| !map.contains_key(*r))
                    .map(|r| join(path, r))
                    .collect()
            })
            .unwrap_or_default();
        for field in missing {
            self.errors.push(FieldError::required(field));
        }
        self.count(
            schema,
            path,
            present,
            "minProperties",
            "maxProperties",
            "properties",
        );
    }
}

#[cfg(test)]
mod tests;
