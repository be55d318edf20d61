//! The generated CRDs: what they must contain (compat §2, §13, §14 item 1), and that the
//! chart's checked-in CRD files are exactly what `crdgen --chart-dir` writes.

use std::path::Path;

use keda_http_api::crd;
use keda_http_api::validation;
use serde_json::{Value, json};

fn crd_json(name: &str) -> Value {
    let crd = crd::crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no CRD {name}"));
    crd::crd_value(&crd).expect("serializes")
}

/// The schema at `path` (dot-separated property names; `[]` steps into array items).
fn schema<'a>(root: &'a Value, path: &str) -> &'a Value {
    let mut at = &root["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for step in path.split('.').filter(|s| !s.is_empty()) {
        at = if step == "[]" {
            &at["items"]
        } else {
            &at["properties"][step]
        };
        assert!(!at.is_null(), "no schema at {path} (step {step})");
    }
    at
}

fn rules(schema: &Value) -> Vec<(String, String)> {
    schema["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| {
                    (
                        r["rule"].as_str().unwrap_or_default().to_owned(),
                        r["message"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has_rule(schema: &Value, rule: &str, message: &str) -> bool {
    rules(schema).iter().any(|(r, m)| r == rule && m == message)
}

#[test]
fn chart_files_are_current() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/keda-add-ons-http");
    for (relative, want) in crd::chart_files().expect("renders") {
        let path = chart.join(relative);
        let have = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `make crds`)", path.display()));
        assert!(
            have == want,
            "{} differs from crdgen's output; run `make crds`",
            path.display()
        );
    }
}

#[test]
fn chart_files_are_wrapped_and_kept() {
    for (relative, text) in crd::chart_files().expect("renders") {
        assert!(
            text.starts_with("{{- if .Values.crds.install }}\n"),
            "{relative}"
        );
        assert!(text.ends_with("{{- end }}\n"), "{relative}");
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("{{"))
            .collect::<Vec<_>>()
            .join("\n");
        let value: Value = serde_saphyr::from_str(&body).expect("YAML inside the wrapper");
        assert_eq!(
            value["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
}

#[test]
fn names_columns_and_subresources() {
    let ir = crd_json("interceptorroutes.http.keda.sh");
    assert_eq!(ir["spec"]["group"], "http.keda.sh");
    assert_eq!(ir["spec"]["scope"], "Namespaced");
    assert_eq!(
        ir["spec"]["names"],
        json!({"kind": "InterceptorRoute", "plural": "interceptorroutes", "singular": "interceptorroute"})
    );
    let version = &ir["spec"]["versions"][0];
    assert_eq!(version["name"], "v1beta1");
    assert_eq!(version["subresources"], json!({"status": {}}));
    let columns: Vec<(&str, &str)> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default(),
                c["jsonPath"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        columns,
        [
            ("TargetService", ".spec.target.service"),
            ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );

    let httpso = crd_json("httpscaledobjects.http.keda.sh");
    assert_eq!(httpso["spec"]["group"], "http.keda.sh");
    assert_eq!(httpso["spec"]["names"]["kind"], "HTTPScaledObject");
    assert_eq!(httpso["spec"]["names"]["plural"], "httpscaledobjects");
    assert_eq!(httpso["spec"]["names"]["shortNames"], json!(["httpso"]));
    let version = &httpso["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"], json!({"status": {}}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        columns,
        [
            "TargetWorkload",
            "TargetService",
            "MinReplicas",
            "MaxReplicas",
            "Age",
            "Ready"
        ]
    );
}

#[test]
fn interceptor_route_schema() {
    let crd = crd_json("interceptorroutes.http.keda.sh");
    let root = schema(&crd, "");
    assert_eq!(root["required"], json!(["metadata", "spec"]));
    assert!(
        !root["description"]
            .as_str()
            .unwrap_or_default()
            .contains("Auto-generated")
    );
    assert_eq!(
        schema(&crd, "spec")["required"],
        json!(["scalingMetric", "target"])
    );

    let target = schema(&crd, "spec.target");
    assert!(has_rule(
        target,
        "has(self.port) != has(self.portName)",
        "exactly one of 'port' or 'portName' must be set"
    ));
    assert_eq!(schema(&crd, "spec.target.service")["minLength"], 1);
    assert_eq!(schema(&crd, "spec.target.portName")["minLength"], 1);
    assert_eq!(schema(&crd, "spec.target.port")["minimum"], 1);
    assert_eq!(schema(&crd, "spec.target.port")["maximum"], 65535);

    assert_eq!(
        schema(&crd, "spec.rules")["x-kubernetes-list-type"],
        "atomic"
    );
    assert_eq!(
        schema(&crd, "spec.rules.[].hosts")["x-kubernetes-list-type"],
        "set"
    );
    assert_eq!(
        schema(&crd, "spec.rules.[].paths")["x-kubernetes-list-type"],
        "atomic"
    );
    assert_eq!(schema(&crd, "spec.rules.[].paths.[].value")["minLength"], 1);
    let headers = schema(&crd, "spec.rules.[].headers");
    assert_eq!(headers["x-kubernetes-list-type"], "map");
    assert_eq!(headers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(
        schema(&crd, "spec.rules.[].headers.[].name")["minLength"],
        1
    );

    assert!(has_rule(
        schema(&crd, "spec.scalingMetric"),
        "has(self.concurrency) || has(self.requestRate)",
        "at least one of 'concurrency' or 'requestRate' must be set"
    ));
    assert_eq!(
        schema(&crd, "spec.scalingMetric.concurrency.targetValue")["minimum"],
        1
    );
    let rate = schema(&crd, "spec.scalingMetric.requestRate");
    assert_eq!(rate["required"], json!(["targetValue"]));
    assert_eq!(rate["properties"]["targetValue"]["minimum"], 1);
    assert_eq!(rate["properties"]["window"]["default"], "1m");
    assert_eq!(rate["properties"]["granularity"]["default"], "1s");

    let cold_start = schema(&crd, "spec.coldStart");
    assert!(has_rule(
        cold_start,
        validation::COLD_START_RULE,
        validation::COLD_START_MESSAGE
    ));
    assert!(has_rule(
        cold_start,
        validation::OVERFLOW_PLACEHOLDER_RULE,
        validation::OVERFLOW_PLACEHOLDER_MESSAGE
    ));
    assert_eq!(cold_start["properties"]["maxPendingRequests"]["minimum"], 1);
    assert_eq!(
        cold_start["properties"]["overflow"]["enum"],
        json!(["Reject", "Placeholder"])
    );
    let fallback = schema(&crd, "spec.coldStart.fallback.service");
    assert!(has_rule(
        fallback,
        "has(self.port) != has(self.portName)",
        "exactly one of 'port' or 'portName' must be set"
    ));
    assert_eq!(fallback["properties"]["name"]["minLength"], 1);
    assert_eq!(fallback["properties"]["port"]["maximum"], 65535);

    for response in [
        schema(&crd, "spec.coldStart.placeholder.response"),
        schema(&crd, "spec.staticRoutes.[].response"),
    ] {
        assert!(has_rule(
            response,
            validation::BODY_XOR_RULE,
            validation::BODY_XOR_MESSAGE
        ));
        let status = &response["properties"]["statusCode"];
        assert_eq!(
            (status["minimum"].clone(), status["maximum"].clone()),
            (json!(100), json!(599))
        );
        // HEAD's CRD has no schema default: 503 (placeholder) and 200 (static route) are
        // applied in code, because the two share this schema.
        assert!(status.get("default").is_none());
        assert_eq!(response["properties"]["body"]["maxLength"], 32768);
        assert_eq!(
            response["properties"]["bodyFromConfigMap"]["properties"]["name"]["minLength"],
            1
        );
    }

    let static_routes = schema(&crd, "spec.staticRoutes");
    assert_eq!(static_routes["x-kubernetes-list-type"], "atomic");
    let item = &static_routes["items"];
    assert_eq!(item["required"], json!(["response", "rules"]));
    assert_eq!(item["properties"]["rules"]["minItems"], 1);
    assert_eq!(
        item["properties"]["responseMode"]["default"],
        "WhenUnavailable"
    );
    assert_eq!(
        item["properties"]["responseMode"]["enum"],
        json!(["Always", "WhenUnavailable"])
    );

    for duration in ["readiness", "request", "responseHeader"] {
        let d = &schema(&crd, "spec.timeouts")["properties"][duration];
        assert_eq!(d["type"], "string", "{duration}");
        assert!(d["pattern"].is_string(), "{duration}");
    }

    let conditions = schema(&crd, "status.conditions");
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));

    let text = serde_json::to_string(&crd).expect("serializes");
    assert!(!text.contains("\"nullable\""));
}

#[test]
fn http_scaled_object_schema() {
    let crd = crd_json("httpscaledobjects.http.keda.sh");
    assert_eq!(schema(&crd, "")["required"], json!(["metadata", "spec"]));
    assert_eq!(schema(&crd, "spec")["required"], json!(["scaleTargetRef"]));
    for path in ["spec.scaleTargetRef", "spec.coldStartTimeoutFailoverRef"] {
        let s = schema(&crd, path);
        assert!(
            has_rule(
                s,
                "has(self.portName) != has(self.port)",
                "must define either the 'portName' or the 'port'"
            ),
            "{path}"
        );
        assert!(
            s["required"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("service"))),
            "{path}"
        );
    }
    assert_eq!(
        schema(&crd, "spec.coldStartTimeoutFailoverRef.timeoutSeconds")["default"],
        30
    );
    assert_eq!(
        schema(&crd, "spec.scalingMetric.concurrency.targetValue")["default"],
        100
    );
    let rate = schema(&crd, "spec.scalingMetric.requestRate");
    assert_eq!(rate["properties"]["targetValue"]["default"], 100);
    assert_eq!(rate["properties"]["window"]["default"], "1m");
    assert_eq!(rate["properties"]["granularity"]["default"], "1s");
    let headers = schema(&crd, "spec.headers");
    assert_eq!(headers["x-kubernetes-list-type"], "map");
    assert_eq!(headers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(schema(&crd, "spec.headers.[].name")["minLength"], 1);
    let status = schema(&crd, "status");
    for field in ["targetWorkload", "targetService", "conditions"] {
        assert!(status["properties"][field].is_object(), "{field}");
    }
}

#[test]
fn keda_scaled_object_stand_in() {
    let crd = crd::crd_value(&crd::keda_scaled_object_crd()).expect("serializes");
    assert_eq!(crd["metadata"]["name"], "scaledobjects.keda.sh");
    assert_eq!(crd["spec"]["group"], "keda.sh");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["so"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"], json!({"status": {}}));
    let root = &version["schema"]["openAPIV3Schema"];
    assert_eq!(
        root["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    assert_eq!(
        root["properties"]["status"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    assert_eq!(
        root["properties"]["spec"]["required"],
        json!(["scaleTargetRef"])
    );
    assert!(
        root["description"]
            .as_str()
            .unwrap_or_default()
            .contains("stand-in")
    );
    // The stand-in is not part of the chart.
    assert!(crd::crds().iter().all(|c| c.spec.group != "keda.sh"));
}
