//! The CRDs' CEL validation rules and their messages, and the schema bounds that both the
//! CRD types (for the generated YAML) and the Rust checks in [`crate::validation`] use.
//!
//! The type modules and `validation` import from here, never from each other's checks.

/// CEL: an InterceptorRoute `target` or fallback `service` has exactly one of `port` and
/// `portName`.
pub const PORT_XOR_RULE: &str = "has(self.port) != has(self.portName)";
/// The message of [`PORT_XOR_RULE`] (the official text).
pub const PORT_XOR_MESSAGE: &str = "exactly one of 'port' or 'portName' must be set";

/// CEL: an HTTPScaledObject `scaleTargetRef` or `coldStartTimeoutFailoverRef` has exactly one
/// of `port` and `portName`.
pub const HTTPSO_PORT_XOR_RULE: &str = "has(self.portName) != has(self.port)";
/// The message of [`HTTPSO_PORT_XOR_RULE`] (the official text).
pub const HTTPSO_PORT_XOR_MESSAGE: &str = "must define either the 'portName' or the 'port'";

/// CEL: `scalingMetric` sets at least one metric.
pub const SCALING_METRIC_RULE: &str = "has(self.concurrency) || has(self.requestRate)";
/// The message of [`SCALING_METRIC_RULE`] (the official text).
pub const SCALING_METRIC_MESSAGE: &str =
    "at least one of 'concurrency' or 'requestRate' must be set";

/// CEL: `coldStart` sets at least one behaviour.
pub const COLD_START_RULE: &str =
    "has(self.fallback) || has(self.placeholder) || has(self.maxPendingRequests)";
/// The message of [`COLD_START_RULE`].
pub const COLD_START_MESSAGE: &str =
    "at least one of 'fallback', 'placeholder' or 'maxPendingRequests' must be set";

/// CEL: `overflow: Placeholder` needs a placeholder to answer with.
pub const OVERFLOW_PLACEHOLDER_RULE: &str =
    "!has(self.overflow) || self.overflow != 'Placeholder' || has(self.placeholder)";
/// The message of [`OVERFLOW_PLACEHOLDER_RULE`].
pub const OVERFLOW_PLACEHOLDER_MESSAGE: &str =
    "'overflow: Placeholder' requires 'placeholder' to be set";

/// CEL: a response has an inline body or a ConfigMap body, not both.
pub const BODY_XOR_RULE: &str = "!(has(self.body) && has(self.bodyFromConfigMap))";
/// The message of [`BODY_XOR_RULE`].
pub const BODY_XOR_MESSAGE: &str = "at most one of 'body' or 'bodyFromConfigMap' may be set";

/// The longest inline response body, in characters (the CRD's `maxLength`).
pub const MAX_BODY_LENGTH: usize = 32_768;
