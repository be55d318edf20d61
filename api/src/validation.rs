//! The CRDs' validation rules, as CEL text for the API server and as Rust checks for our
//! programs.
//!
//! The API server enforces the CEL rules and schema bounds of the CRDs ([`crate::crd`]) on
//! every write. Objects that reach our programs without an API server in front (manifests
//! read from disk, a test stand-in that skips validation, an older CRD still installed) are
//! checked with [`InterceptorRouteSpec::validate`] and [`HTTPScaledObjectSpec::validate`],
//! which mirror those rules and name the offending field:
//!
//! ```text
//! spec.target: exactly one of 'port' or 'portName' must be set
//! ```
//!
//! Deserialization errors get the same treatment through [`from_yaml`] and [`from_json`],
//! which report the path of the field serde rejected
//! (`spec.scalingMetric.requestRate.window: invalid duration "5 minutes": ...`).

use std::collections::BTreeSet;
use std::fmt;

use serde::de::DeserializeOwned;

use crate::http_scaled_object::HTTPScaledObjectSpec;
use crate::interceptor_route::{
    HeaderMatch, InterceptorRouteSpec, Overflow, RoutingRule, ServiceRef, StaticResponse,
};

pub use crate::cel::{
    BODY_XOR_MESSAGE, BODY_XOR_RULE, COLD_START_MESSAGE, COLD_START_RULE, HTTPSO_PORT_XOR_MESSAGE,
    HTTPSO_PORT_XOR_RULE, MAX_BODY_LENGTH, OVERFLOW_PLACEHOLDER_MESSAGE, OVERFLOW_PLACEHOLDER_RULE,
    PORT_XOR_MESSAGE, PORT_XOR_RULE, SCALING_METRIC_MESSAGE, SCALING_METRIC_RULE,
};

/// One broken rule and the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// The field, from the object root: `spec.coldStart.fallback.service`, `spec.rules[0]`.
    pub path: String,
    /// What is wrong, in the CRD's words where the CRD has a message.
    pub message: String,
}

/// Every rule a spec breaks, in field order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The broken rules.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

/// Collects field errors while walking a spec.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn min_length(&mut self, path: &str, value: &str) {
        if value.is_empty() {
            self.push(path, "must not be empty");
        }
    }

    fn range(&mut self, path: &str, value: i32, min: i32, max: i32) {
        if value < min || value > max {
            self.push(path, format!("{value} is outside {min}-{max}"));
        }
    }

    fn minimum(&mut self, path: &str, value: i32, min: i32) {
        if value < min {
            self.push(path, format!("{value} is less than {min}"));
        }
    }

    fn port_xor(
        &mut self,
        path: &str,
        port: Option<i32>,
        port_name: Option<&str>,
        message: &str,
        port_range: bool,
    ) {
        if port.is_some() == port_name.is_some() {
            self.push(path, message);
        }
        if let Some(port) = port.filter(|_| port_range) {
            self.range(&format!("{path}.port"), port, 1, 65_535);
        }
        if let Some(name) = port_name {
            self.min_length(&format!("{path}.portName"), name);
        }
    }

    fn headers(&mut self, path: &str, headers: &[HeaderMatch]) {
        let mut seen = BTreeSet::new();
        for (i, header) in headers.iter().enumerate() {
            self.min_length(&format!("{path}[{i}].name"), &header.name);
            if !seen.insert(header.name.as_str()) {
                self.push(
                    format!("{path}[{i}]"),
                    format!("duplicate entry for key name {:?}", header.name),
                );
            }
        }
    }

    fn rule(&mut self, path: &str, rule: &RoutingRule) {
        let mut seen = BTreeSet::new();
        for (i, host) in rule.hosts.iter().enumerate() {
            if !seen.insert(host.as_str()) {
                self.push(
                    format!("{path}.hosts[{i}]"),
                    format!("duplicate value {host:?}"),
                );
            }
        }
        for (i, path_match) in rule.paths.iter().enumerate() {
            self.min_length(&format!("{path}.paths[{i}].value"), &path_match.value);
        }
        self.headers(&format!("{path}.headers"), &rule.headers);
    }

    fn service_ref(&mut self, path: &str, service: &ServiceRef) {
        self.min_length(&format!("{path}.name"), &service.name);
        self.port_xor(
            path,
            service.port,
            service.port_name.as_deref(),
            PORT_XOR_MESSAGE,
            true,
        );
    }

    fn response(&mut self, path: &str, response: &StaticResponse) {
        if response.body.is_some() && response.body_from_config_map.is_some() {
            self.push(path, BODY_XOR_MESSAGE);
        }
        if let Some(code) = response.status_code {
            self.range(&format!("{path}.statusCode"), code, 100, 599);
        }
        if let Some(body) = &response.body {
            let chars = body.chars().count();
            if chars > MAX_BODY_LENGTH {
                self.push(
                    format!("{path}.body"),
                    format!("{chars} characters is longer than {MAX_BODY_LENGTH}"),
                );
            }
        }
        if let Some(config_map) = &response.body_from_config_map {
            self.min_length(&format!("{path}.bodyFromConfigMap.name"), &config_map.name);
        }
    }

    fn finish(self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { errors: self.0 })
        }
    }
}

impl InterceptorRouteSpec {
    /// Checks the rules the CRD makes the API server enforce (CEL rules, bounds, lengths,
    /// list-map keys), reporting every broken one with its path from the object root
    /// (`spec.…`). Defaults are not applied; absent optional fields are fine.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errors = Errors::default();
        errors.min_length("spec.target.service", &self.target.service);
        errors.port_xor(
            "spec.target",
            self.target.port,
            self.target.port_name.as_deref(),
            PORT_XOR_MESSAGE,
            true,
        );
        for (i, rule) in self.rules.iter().enumerate() {
            errors.rule(&format!("spec.rules[{i}]"), rule);
        }
        let metric = &self.scaling_metric;
        if metric.concurrency.is_none() && metric.request_rate.is_none() {
            errors.push("spec.scalingMetric", SCALING_METRIC_MESSAGE);
        }
        if let Some(concurrency) = &metric.concurrency {
            errors.minimum(
                "spec.scalingMetric.concurrency.targetValue",
                concurrency.target_value,
                1,
            );
        }
        if let Some(rate) = &metric.request_rate {
            errors.minimum(
                "spec.scalingMetric.requestRate.targetValue",
                rate.target_value,
                1,
            );
        }
        if let Some(cold_start) = &self.cold_start {
            if cold_start.fallback.is_none()
                && cold_start.placeholder.is_none()
                && cold_start.max_pending_requests.is_none()
            {
                errors.push("spec.coldStart", COLD_START_MESSAGE);
            }
            if cold_start.overflow == Some(Overflow::Placeholder)
                && cold_start.placeholder.is_none()
            {
                errors.push("spec.coldStart", OVERFLOW_PLACEHOLDER_MESSAGE);
            }
            if let Some(fallback) = &cold_start.fallback {
                errors.service_ref("spec.coldStart.fallback.service", &fallback.service);
            }
            if let Some(placeholder) = &cold_start.placeholder {
                errors.response("spec.coldStart.placeholder.response", &placeholder.response);
            }
            if let Some(max) = cold_start.max_pending_requests {
                errors.minimum("spec.coldStart.maxPendingRequests", max, 1);
            }
        }
        for (i, route) in self.static_routes.iter().enumerate() {
            let path = format!("spec.staticRoutes[{i}]");
            if route.rules.is_empty() {
                errors.push(format!("{path}.rules"), "must have at least 1 item");
            }
            for (j, rule) in route.rules.iter().enumerate() {
                errors.rule(&format!("{path}.rules[{j}]"), rule);
            }
            errors.response(&format!("{path}.response"), &route.response);
        }
        errors.finish()
    }
}

impl HTTPScaledObjectSpec {
    /// Checks the rules the CRD makes the API server enforce (the port CEL rules, header
    /// names and list-map keys), reporting every broken one with its path from the object
    /// root (`spec.…`).
    ///
    /// It does not reject `scalingMetric` with both `concurrency` and `requestRate`: the CRD
    /// accepts that and the operator reports it as a reconcile error, as the official one does.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errors = Errors::default();
        errors.headers("spec.headers", &self.headers);
        let target = &self.scale_target_ref;
        errors.port_xor(
            "spec.scaleTargetRef",
            target.port,
            target.port_name.as_deref(),
            HTTPSO_PORT_XOR_MESSAGE,
            false,
        );
        if let Some(failover) = &self.cold_start_timeout_failover_ref {
            errors.port_xor(
                "spec.coldStartTimeoutFailoverRef",
                failover.port,
                failover.port_name.as_deref(),
                HTTPSO_PORT_XOR_MESSAGE,
                false,
            );
        }
        errors.finish()
    }
}

/// Why a manifest could not be turned into a typed object.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not YAML (or not JSON) at all.
    #[error("{format} syntax: {reason}")]
    Syntax {
        /// `YAML` or `JSON`.
        format: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// Well-formed, but a field has the wrong shape or value.
    #[error("{path}: {reason}")]
    Field {
        /// The field serde rejected, from the object root (`spec.target.port`); `.` for the
        /// root itself.
        path: String,
        /// serde's message (unknown variant, invalid duration, missing field, ...).
        reason: String,
    },
}

/// Deserializes a JSON value, naming the field that failed. A field the type does not know
/// is an error, as the API server refuses it under strict field validation (kubectl's
/// default); watches stay lenient, since the server prunes such fields from stored objects.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ParseError> {
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(field_path(&path));
    let typed =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut note))
            .map_err(|e| ParseError::Field {
                path: e.path().to_string(),
                reason: e.inner().to_string(),
            })?;
    // Every object has these; the typed structs take them from the type, not the input.
    unknown.retain(|path| path != "apiVersion" && path != "kind");
    match unknown.into_iter().next() {
        Some(path) => Err(ParseError::Field {
            path,
            reason: "unknown field".to_owned(),
        }),
        None => Ok(typed),
    }
}

/// `spec.rules[0].hosts`, as the other errors write paths.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Deserializes one YAML document, naming the field that failed.
pub fn from_yaml<T: DeserializeOwned>(yaml: &str) -> Result<T, ParseError> {
    let value: serde_json::Value =
        serde_saphyr::from_str(yaml).map_err(|e| ParseError::Syntax {
            format: "YAML",
            reason: e.to_string(),
        })?;
    from_value(value)
}

/// Deserializes JSON text, naming the field that failed.
pub fn from_json<T: DeserializeOwned>(json: &str) -> Result<T, ParseError> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| ParseError::Syntax {
        format: "JSON",
        reason: e.to_string(),
    })?;
    from_value(value)
}
