use serde_json::json;

use super::*;

fn crd(root: Value) -> Arc<CrdSchema> {
    let crd = json!({"spec": {
        "group": "example.com", "names": {"kind": "Widget", "plural": "widgets"},
        "versions": [{"name": "v1", "schema": {"openAPIV3Schema": root}}]
    }});
    let mut schemas = schemas_from_crd(&crd).unwrap();
    schemas.remove(0).1
}

fn widget_schema() -> Arc<CrdSchema> {
    crd(json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["name", "replicas"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
                    "replicas": {"type": "integer", "minimum": 0, "maximum": 10},
                    "mode": {"type": "string", "enum": ["a", "b"]},
                    "port": {"x-kubernetes-int-or-string": true},
                    "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}}
                },
                "x-kubernetes-validations": [{"rule": "self.replicas != 7", "message": "seven is unlucky"}]
            }
        }
    }))
}

fn admit(object: &mut Value, mode: FieldValidation) -> Result<(), SchemaFailure> {
    widget_schema().admit(object, None, mode, false)
}

fn invalid_fields(object: Value) -> Vec<String> {
    let mut object = object;
    match admit(&mut object, FieldValidation::Strict) {
        Err(SchemaFailure::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn a_valid_object_passes_and_keeps_preserved_fields() {
    let mut object = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"name": "abc", "replicas": 3, "mode": "a", "port": "http", "tags": ["x"],
                 "extra": {"anything": [1, 2]}, "env": {"K": "v"}}});
    let before = object.clone();
    admit(&mut object, FieldValidation::Strict).unwrap();
    assert_eq!(object, before);
}

#[test]
fn every_constraint_is_reported_with_its_field_path() {
    let errors = invalid_fields(
        json!({"spec": {"name": "ABCDEF", "replicas": 11, "mode": "c",
        "port": true, "tags": ["a", "b", "c"], "env": {"K": 1}}}),
    );
    let joined = errors.join("\n");
    for expected in [
        "spec.name: Too long",
        "spec.name: Invalid value: \"ABCDEF\": spec.name in body should match '^[a-z]+$'",
        "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
        "spec.mode: Unsupported value: \"c\"",
        "spec.port: Invalid value: \"boolean\"",
        "spec.tags: Too many: 3",
        "spec.env[K]: Invalid value: \"integer\"",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in\n{joined}"
        );
    }
    assert_eq!(
        invalid_fields(json!({"spec": {}})),
        ["spec.name: Required value", "spec.replicas: Required value"]
    );
}

#[test]
fn cel_rules_run_after_the_schema_checks() {
    let errors = invalid_fields(json!({"spec": {"name": "abc", "replicas": 7}}));
    assert_eq!(
        errors,
        ["spec: Invalid value: \"object\": seven is unlucky"]
    );
}

#[test]
fn unknown_fields_are_refused_when_strict_and_pruned_otherwise() {
    let object = json!({"spec": {"name": "abc", "replicas": 1, "bogus": 1}, "other": {}});
    let mut strict = object.clone();
    match admit(&mut strict, FieldValidation::Strict) {
        Err(SchemaFailure::Unknown(fields)) => assert_eq!(fields, ["other", "spec.bogus"]),
        other => panic!("expected Unknown, got {other:?}"),
    }
    let mut pruned = object;
    admit(&mut pruned, FieldValidation::Warn).unwrap();
    assert_eq!(pruned, json!({"spec": {"name": "abc", "replicas": 1}}));
}

#[test]
fn status_writes_only_answer_for_status() {
    let mut object = json!({"spec": {"name": "abc"}});
    widget_schema()
        .admit(&mut object, None, FieldValidation::Strict, true)
        .unwrap();
}

#[test]
fn a_crd_with_a_broken_pattern_or_rule_is_refused() {
    let crd = json!({"spec": {"group": "example.com", "names": {"kind": "W", "plural": "ws"},
        "versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {
            "a": {"type": "string", "pattern": "("},
            "b": {"type": "object", "x-kubernetes-validations": [{"rule": "self.a == == 1"}]}}}}}]}});
    let errors = schemas_from_crd(&crd).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
}
