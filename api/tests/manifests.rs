//! Manifests in `tests/manifests/`: every example of compat §2/§11 round-trips through the
//! typed objects; every malformed one fails with an error that names the field.
//!
//! `valid/*.yaml` deserialize into [`InterceptorRoute`], [`HTTPScaledObject`] or
//! [`ScaledObject`] (by `kind`), pass `validate()`, and serialize back to a JSON value equal
//! to the input, except for the fields listed in [`FILLED_DEFAULTS`]. Durations are compared
//! as written, so the manifests use the canonical Go spelling our serializer writes (`1m`,
//! `1m30s`; `60s` would come back as `1m`, see `durations_are_normalised`).
//!
//! `invalid/*.yaml` are listed in [`INVALID`] with the messages they must produce, either
//! from deserialization ([`validation::from_yaml`]) or from `validate()`.

use std::path::{Path, PathBuf};

use keda_http_api::validation::{self, ParseError};
use keda_http_api::{HTTPScaledObject, InterceptorRoute, ScaledObject};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Fields that serde fills with the CRD default when the manifest leaves them out, so the
/// serialized object has them and the input does not: (manifest, JSON pointer, value).
///
/// These are the HTTPScaledObject fields whose Rust type is not an `Option` (the official
/// CRD defaults them too, so the API server would have filled them in anyway). Every other
/// default (`window`, `granularity`, `responseMode`) is left to the API server: absent stays
/// absent.
const FILLED_DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "httpso-defaults.yaml",
        "/spec/coldStartTimeoutFailoverRef/timeoutSeconds",
        "30",
    ),
    (
        "httpso-defaults.yaml",
        "/spec/scalingMetric/concurrency/targetValue",
        "100",
    ),
    (
        "httpso-request-rate-defaults.yaml",
        "/spec/scalingMetric/requestRate/targetValue",
        "100",
    ),
];

/// Malformed manifests and the messages their error must contain (each names the field).
const INVALID: &[(&str, &[&str])] = &[
    (
        "ir-port-and-port-name.yaml",
        &["spec.target: exactly one of 'port' or 'portName' must be set"],
    ),
    (
        "ir-fallback-without-port.yaml",
        &["spec.coldStart.fallback.service: exactly one of 'port' or 'portName' must be set"],
    ),
    (
        "ir-empty-scaling-metric.yaml",
        &["spec.scalingMetric: at least one of 'concurrency' or 'requestRate' must be set"],
    ),
    (
        "ir-bad-duration.yaml",
        &["spec.scalingMetric.requestRate.window: invalid duration \"5 minutes\""],
    ),
    (
        "ir-negative-timeout.yaml",
        &["spec.timeouts.request: negative duration \"-5s\""],
    ),
    (
        "ir-unknown-response-mode.yaml",
        &["spec.staticRoutes[0].responseMode: unknown variant `Sometimes`"],
    ),
    (
        "ir-unknown-overflow.yaml",
        &["spec.coldStart.overflow: unknown variant `Queue`"],
    ),
    (
        "ir-overflow-without-placeholder.yaml",
        &["spec.coldStart: 'overflow: Placeholder' requires 'placeholder' to be set"],
    ),
    (
        "ir-empty-cold-start.yaml",
        &[
            "spec.coldStart: at least one of 'fallback', 'placeholder' or 'maxPendingRequests' must be set",
        ],
    ),
    (
        "ir-body-and-config-map.yaml",
        &[
            "spec.coldStart.placeholder.response: at most one of 'body' or 'bodyFromConfigMap' may be set",
        ],
    ),
    (
        "ir-out-of-range.yaml",
        &[
            "spec.target.service: must not be empty",
            "spec.target.port: 70000 is outside 1-65535",
            "spec.scalingMetric.concurrency.targetValue: 0 is less than 1",
            "spec.staticRoutes[0].rules: must have at least 1 item",
            "spec.staticRoutes[0].response.statusCode: 700 is outside 100-599",
        ],
    ),
    (
        "ir-duplicate-header.yaml",
        &["spec.rules[0].headers[1]: duplicate entry for key name \"X-Route\""],
    ),
    ("ir-missing-target.yaml", &["spec: missing field `target`"]),
    (
        "ir-port-not-a-number.yaml",
        &["spec.target.port: invalid type: string \"http\""],
    ),
    (
        "httpso-port-and-port-name.yaml",
        &["spec.scaleTargetRef: must define either the 'portName' or the 'port'"],
    ),
    (
        "httpso-failover-without-port.yaml",
        &["spec.coldStartTimeoutFailoverRef: must define either the 'portName' or the 'port'"],
    ),
    (
        "httpso-bad-duration.yaml",
        &["spec.timeouts.conditionWait: invalid duration \"20 seconds\""],
    ),
    (
        "ir-unknown-field.yaml",
        &["spec.timeouts.requestTimeout: unknown field"],
    ),
    (
        "ir-huge-duration.yaml",
        &[
            "spec.timeouts.request: duration \"99999999999999999999h\" is too large (at most 2562047h)",
        ],
    ),
    (
        "httpso-greek-mu-duration.yaml",
        &["spec.timeouts.responseHeader: invalid duration \"5μs\": write µs with the micro sign"],
    ),
    (
        "ir-leading-dot-duration.yaml",
        &[
            "spec.scalingMetric.requestRate.window: invalid duration \".5s\": a digit must come before the decimal point",
        ],
    ),
];

fn manifests(dir: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/manifests")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("manifest directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", root.display());
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("file name")
                .to_owned();
            let text = std::fs::read_to_string(&path).expect("readable manifest");
            (name, text)
        })
        .collect()
}

fn round_trip<T: DeserializeOwned + Serialize>(input: &Value) -> Result<(T, Value), ParseError> {
    let typed: T = validation::from_value(input.clone())?;
    let output = serde_json::to_value(&typed).expect("serializes");
    Ok((typed, output))
}

/// Parses and validates a manifest by its `kind`; `Ok` holds the re-serialized value.
fn check(yaml: &str) -> Result<Value, String> {
    let input: Value = validation::from_yaml(yaml).map_err(|e| e.to_string())?;
    match input["kind"].as_str() {
        Some("InterceptorRoute") => {
            let (route, output) =
                round_trip::<InterceptorRoute>(&input).map_err(|e| e.to_string())?;
            route.spec.validate().map_err(|e| e.to_string())?;
            Ok(output)
        }
        Some("HTTPScaledObject") => {
            let (httpso, output) =
                round_trip::<HTTPScaledObject>(&input).map_err(|e| e.to_string())?;
            httpso.spec.validate().map_err(|e| e.to_string())?;
            Ok(output)
        }
        Some("ScaledObject") => {
            let (_, output) = round_trip::<ScaledObject>(&input).map_err(|e| e.to_string())?;
            Ok(output)
        }
        other => panic!("unexpected kind {other:?}"),
    }
}

fn set_pointer(value: &mut Value, pointer: &str, new: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer with a parent");
    let parent = value
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{parent} is not an object"));
    parent.insert(key.to_owned(), new);
}

#[test]
fn valid_manifests_round_trip() {
    let all = manifests("valid");
    let mut kinds = std::collections::BTreeSet::new();
    for (name, yaml) in &all {
        let input: Value = serde_saphyr::from_str(yaml).expect("YAML");
        kinds.insert(input["kind"].as_str().unwrap_or_default().to_owned());
        let output = check(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut expected = input.clone();
        for (file, pointer, value) in FILLED_DEFAULTS {
            if file == name {
                assert!(
                    input.pointer(pointer).is_none(),
                    "{name}: {pointer} is in the manifest; drop it from FILLED_DEFAULTS"
                );
                set_pointer(
                    &mut expected,
                    pointer,
                    serde_json::from_str(value).expect("JSON"),
                );
            }
        }
        assert_eq!(
            output,
            expected,
            "{name} did not round-trip:\n got: {}\nwant: {}",
            serde_json::to_string_pretty(&output).unwrap_or_default(),
            serde_json::to_string_pretty(&expected).unwrap_or_default()
        );
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["HTTPScaledObject", "InterceptorRoute", "ScaledObject"]
    );
    for (file, _, _) in FILLED_DEFAULTS {
        assert!(
            all.iter().any(|(name, _)| name == file),
            "FILLED_DEFAULTS names missing manifest {file}"
        );
    }
}

#[test]
fn invalid_manifests_name_the_field() {
    let all = manifests("invalid");
    for (name, _) in &all {
        assert!(
            INVALID.iter().any(|(file, _)| file == name),
            "{name} has no expected error in INVALID"
        );
    }
    for (file, wanted) in INVALID {
        let (_, yaml) = all
            .iter()
            .find(|(name, _)| name == file)
            .unwrap_or_else(|| panic!("INVALID names missing manifest {file}"));
        let error = match check(yaml) {
            Ok(_) => panic!("{file} was accepted"),
            Err(error) => error,
        };
        for want in *wanted {
            assert!(error.contains(want), "{file}: {error:?} lacks {want:?}");
        }
    }
}

#[test]
fn validation_errors_list_every_field() {
    let yaml = manifests("invalid")
        .into_iter()
        .find(|(name, _)| name == "ir-out-of-range.yaml")
        .map(|(_, yaml)| yaml)
        .expect("manifest");
    let route: InterceptorRoute = validation::from_yaml(&yaml).expect("well-formed");
    let error = route.spec.validate().expect_err("out of range");
    let paths: Vec<&str> = error.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.target.service",
            "spec.target.port",
            "spec.scalingMetric.concurrency.targetValue",
            "spec.staticRoutes[0].rules",
            "spec.staticRoutes[0].response.statusCode",
        ]
    );
}

#[test]
fn durations_are_normalised() {
    let yaml = "apiVersion: http.keda.sh/v1beta1\nkind: InterceptorRoute\nmetadata:\n  name: d\nspec:\n  target:\n    service: s\n    port: 80\n  scalingMetric:\n    requestRate:\n      targetValue: 1\n      window: 60s\n      granularity: 1000ms\n";
    let output = check(yaml).expect("valid");
    assert_eq!(
        output["spec"]["scalingMetric"]["requestRate"],
        serde_json::json!({"targetValue": 1, "window": "1m", "granularity": "1s"})
    );
}

#[test]
fn json_errors_name_the_field_too() {
    let json = r#"{"apiVersion":"http.keda.sh/v1alpha1","kind":"HTTPScaledObject","metadata":{"name":"x"},"spec":{"scaleTargetRef":{"service":"s","port":80},"scalingMetric":{"requestRate":{"window":"soon"}}}}"#;
    let error = validation::from_json::<HTTPScaledObject>(json).expect_err("bad window");
    assert!(
        error
            .to_string()
            .starts_with("spec.scalingMetric.requestRate.window: invalid duration \"soon\""),
        "{error}"
    );
    let syntax = validation::from_json::<HTTPScaledObject>("{").expect_err("not JSON");
    assert!(matches!(syntax, ParseError::Syntax { format: "JSON", .. }));
}
