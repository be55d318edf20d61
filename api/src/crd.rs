//! The CustomResourceDefinitions of keda-http, as the chart installs them.
//!
//! [`crds`] returns `interceptorroutes.http.keda.sh` and `httpscaledobjects.http.keda.sh`. Their
//! schemas come from the types' derives (field attributes carry the bounds, defaults, list
//! types and CEL rules) and are then polished here where attributes cannot reach: fields are
//! not `nullable` (the official CRDs are not: an explicit `null` is pruned rather than stored),
//! the root lists `apiVersion`, `kind` and `metadata` and requires `metadata` and `spec`, and
//! the root carries no `title`.
//!
//! [`keda_scaled_object_crd`] is a **test stand-in** for KEDA's `scaledobjects.keda.sh`: just
//! enough structure for a bare API server (the local cluster) to store ScaledObjects with
//! their status subresource. It is not KEDA's CRD and is never part of the chart.
//!
//! [`chart_files`] renders the two CRDs as the chart's `templates/crds/` files.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceValidation,
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::{HTTPScaledObject, InterceptorRoute, ScaledObject};

/// Why a CRD could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// YAML serialization failed.
    #[error("serializing CRD {name} to YAML: {reason}")]
    Yaml {
        /// CRD name.
        name: String,
        /// The serializer's message.
        reason: String,
    },
    /// JSON serialization failed.
    #[error("serializing CRD {name} to JSON: {reason}")]
    Json {
        /// CRD name.
        name: String,
        /// The serializer's message.
        reason: String,
    },
    /// The rendered YAML contains `{{`, which Helm would read as a template action.
    #[error("CRD {name} contains '{{{{', which would break the Helm template")]
    TemplateSyntax {
        /// CRD name.
        name: String,
    },
}

/// The chart's CRD files, relative to the chart directory, and the CRD each holds.
pub const CHART_CRD_FILES: [(&str, &str); 2] = [
    (
        "templates/crds/interceptorroutes.yaml",
        "interceptorroutes.http.keda.sh",
    ),
    (
        "templates/crds/httpscaledobjects.yaml",
        "httpscaledobjects.http.keda.sh",
    ),
];

/// The annotation that keeps the CRDs (and so every route) when the chart is uninstalled.
pub const RESOURCE_POLICY_ANNOTATION: (&str, &str) = ("helm.sh/resource-policy", "keep");

/// Both CRDs, InterceptorRoute first.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![interceptor_route_crd(), http_scaled_object_crd()]
}

/// `interceptorroutes.http.keda.sh` (v1beta1).
pub fn interceptor_route_crd() -> CustomResourceDefinition {
    polish(InterceptorRoute::crd())
}

/// `httpscaledobjects.http.keda.sh` (v1alpha1, shortName `httpso`).
pub fn http_scaled_object_crd() -> CustomResourceDefinition {
    polish(HTTPScaledObject::crd())
}

/// A stand-in for KEDA's `scaledobjects.keda.sh` (v1alpha1, shortName `so`) for a bare API
/// server in tests: `spec` and `status` keep every field (`x-kubernetes-preserve-unknown-fields`),
/// `spec.scaleTargetRef.name` is required, and `status` is a subresource. Install the real
/// CRD from KEDA's chart on a real cluster.
pub fn keda_scaled_object_crd() -> CustomResourceDefinition {
    let mut crd = ScaledObject::crd();
    let object = |description: &str| JSONSchemaProps {
        description: Some(description.to_owned()),
        type_: Some("object".to_owned()),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..JSONSchemaProps::default()
    };
    let string = |description: &str| JSONSchemaProps {
        description: Some(description.to_owned()),
        type_: Some("string".to_owned()),
        ..JSONSchemaProps::default()
    };
    let mut scale_target_ref = object("The workload KEDA scales.");
    scale_target_ref.properties = Some(BTreeMap::from([(
        "name".to_owned(),
        string("Workload name."),
    )]));
    scale_target_ref.required = Some(vec!["name".to_owned()]);
    let mut spec = object("KEDA ScaledObject spec; fields beyond scaleTargetRef are kept as sent.");
    spec.properties = Some(BTreeMap::from([(
        "scaleTargetRef".to_owned(),
        scale_target_ref,
    )]));
    spec.required = Some(vec!["scaleTargetRef".to_owned()]);
    let mut root = JSONSchemaProps {
        description: Some(
            "Test stand-in for KEDA's ScaledObject CRD (keda.sh/v1alpha1); not KEDA's schema."
                .to_owned(),
        ),
        type_: Some("object".to_owned()),
        properties: Some(BTreeMap::from([
            ("spec".to_owned(), spec),
            ("status".to_owned(), object("KEDA ScaledObject status.")),
        ])),
        required: Some(vec!["spec".to_owned()]),
        ..JSONSchemaProps::default()
    };
    add_root_meta_properties(&mut root);
    let column = |name: &str, type_: &str, json_path: &str| CustomResourceColumnDefinition {
        name: name.to_owned(),
        type_: type_.to_owned(),
        json_path: json_path.to_owned(),
        ..CustomResourceColumnDefinition::default()
    };
    for version in &mut crd.spec.versions {
        version.schema = Some(CustomResourceValidation {
            open_api_v3_schema: Some(root.clone()),
        });
        version.additional_printer_columns = Some(vec![
            column("ScaleTargetName", "string", ".spec.scaleTargetRef.name"),
            column("Min", "integer", ".spec.minReplicaCount"),
            column("Max", "integer", ".spec.maxReplicaCount"),
            column(
                "Ready",
                "string",
                ".status.conditions[?(@.type==\"Ready\")].status",
            ),
            column(
                "Active",
                "string",
                ".status.conditions[?(@.type==\"Active\")].status",
            ),
            column("Age", "date", ".metadata.creationTimestamp"),
        ]);
    }
    crd
}

/// The CRD as a JSON value, with whole-number bounds as integers (`"minimum": 1`, not
/// `1.0`; the typed schema holds them as `f64`), as the official CRDs write them.
pub fn crd_value(crd: &CustomResourceDefinition) -> Result<serde_json::Value, CrdError> {
    let mut value = serde_json::to_value(crd).map_err(|e| CrdError::Json {
        name: crd.metadata.name.clone().unwrap_or_default(),
        reason: e.to_string(),
    })?;
    integral_numbers(&mut value);
    Ok(value)
}

/// Renders one CRD as a YAML document (without a leading `---`), numbers as in
/// [`crd_value`].
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, CrdError> {
    let value = crd_value(crd)?;
    serde_saphyr::to_string(&value).map_err(|e| CrdError::Yaml {
        name: crd.metadata.name.clone().unwrap_or_default(),
        reason: e.to_string(),
    })
}

/// Renders one CRD as a chart template: the `helm.sh/resource-policy: keep` annotation is
/// added, and the document is wrapped in `{{- if .Values.crds.install }}` … `{{- end }}`.
pub fn chart_crd_file(crd: &CustomResourceDefinition) -> Result<String, CrdError> {
    let mut crd = crd.clone();
    let (key, value) = RESOURCE_POLICY_ANNOTATION;
    crd.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_owned(), value.to_owned());
    let yaml = crd_yaml(&crd)?;
    if yaml.contains("{{") {
        return Err(CrdError::TemplateSyntax {
            name: crd.metadata.name.unwrap_or_default(),
        });
    }
    Ok(format!(
        "{{{{- if .Values.crds.install }}}}\n# Generated by `make crds` (crdgen --chart-dir) from the keda-http-api types; do not edit.\n{yaml}{{{{- end }}}}\n"
    ))
}

/// The chart's CRD files: each path of [`CHART_CRD_FILES`] with its content.
pub fn chart_files() -> Result<Vec<(&'static str, String)>, CrdError> {
    let by_name: BTreeMap<String, CustomResourceDefinition> = crds()
        .into_iter()
        .map(|crd| (crd.metadata.name.clone().unwrap_or_default(), crd))
        .collect();
    CHART_CRD_FILES
        .iter()
        .filter_map(|(path, name)| by_name.get(*name).map(|crd| (*path, crd)))
        .map(|(path, crd)| chart_crd_file(crd).map(|text| (path, text)))
        .collect()
}

/// Brings a derived CRD to the official shape (see the module docs).
fn polish(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        root.title = None;
        walk(root, &mut |schema| schema.nullable = None);
        add_root_meta_properties(root);
        let required = root.required.get_or_insert_with(Vec::new);
        for field in ["metadata", "spec"] {
            if !required.iter().any(|r| r == field) {
                required.push(field.to_owned());
            }
        }
        required.sort();
    }
    crd
}

/// Adds the `apiVersion`, `kind` and `metadata` properties every root schema has.
fn add_root_meta_properties(root: &mut JSONSchemaProps) {
    let properties = root.properties.get_or_insert_with(BTreeMap::new);
    let string = |description: &str| JSONSchemaProps {
        description: Some(description.to_owned()),
        type_: Some("string".to_owned()),
        ..JSONSchemaProps::default()
    };
    properties.insert(
        "apiVersion".to_owned(),
        string("The versioned schema of this representation of an object."),
    );
    properties.insert(
        "kind".to_owned(),
        string("The REST resource this object represents."),
    );
    properties.insert(
        "metadata".to_owned(),
        JSONSchemaProps {
            type_: Some("object".to_owned()),
            ..JSONSchemaProps::default()
        },
    );
}

/// Applies `f` to `schema` and every schema nested in it.
fn walk(schema: &mut JSONSchemaProps, f: &mut impl FnMut(&mut JSONSchemaProps)) {
    f(schema);
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        walk(child, f);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => walk(item, f),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            for item in items {
                walk(item, f);
            }
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        walk(extra, f);
    }
    for list in [
        schema.all_of.as_mut(),
        schema.any_of.as_mut(),
        schema.one_of.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        for child in list {
            walk(child, f);
        }
    }
}

/// Rewrites floats with no fractional part (`1.0`) as integers (`1`).
fn integral_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                // Exact for every bound a CRD uses (|f| < 2^53).
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    *n = serde_json::Number::from(f as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_nullable_and_root_shape() {
        for crd in crds() {
            let json = serde_json::to_string(&crd).expect("serializes");
            assert!(!json.contains("\"nullable\""), "{json}");
            let root = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("schema");
            assert_eq!(
                root.required.as_deref(),
                Some(&["metadata".to_owned(), "spec".to_owned()][..])
            );
            assert!(root.title.is_none());
            let description = root.description.as_deref().unwrap_or_default();
            assert!(!description.contains("Auto-generated"), "{description}");
        }
    }

    #[test]
    fn whole_numbers_render_as_integers() {
        let yaml = crd_yaml(&interceptor_route_crd()).expect("renders");
        assert!(yaml.contains("maximum: 65535\n"), "{yaml}");
        assert!(!yaml.contains(".0\n"), "{yaml}");
    }
}
