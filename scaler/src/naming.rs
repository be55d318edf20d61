//! Metric names as the official scaler spells them (compat §5.3).
//!
//! InterceptorRoute metrics are `http_<route>_concurrency` and `http_<route>_rate`, neither
//! namespaced nor escaped. HTTPScaledObject and interceptor self-scaling metrics are
//! `escape("http-" + namespace + "/" + name)`.

use std::fmt::Write as _;

/// The metric name of an InterceptorRoute's concurrency metric.
pub fn route_concurrency_metric(route: &str) -> String {
    format!("http_{route}_concurrency")
}

/// The metric name of an InterceptorRoute's request-rate metric.
pub fn route_rate_metric(route: &str) -> String {
    format!("http_{route}_rate")
}

/// The metric name used for an HTTPScaledObject or the interceptor's own ScaledObject:
/// `escape("http-<namespace>/<name>")`.
pub fn scaled_object_metric(namespace: &str, name: &str) -> String {
    escape(&format!("http-{namespace}/{name}"))
}

/// Replaces every character outside `[-.0-9A-Za-z]` with `_` followed by four upper-case hex
/// digits per UTF-8 byte, so `/` becomes `_002F`.
pub fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                // Writing to a String cannot fail.
                let _ = write!(out, "_{byte:04X}");
            }
        }
    }
    out
}

/// The key an interceptor uses in `/queue` for a route: `<namespace>/<name>`.
pub fn queue_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_the_official_scaler() {
        assert_eq!(
            scaled_object_metric("keda", "keda-add-ons-http-interceptor"),
            "http-keda_002Fkeda-add-ons-http-interceptor"
        );
        assert_eq!(escape("a.b-C9"), "a.b-C9");
        assert_eq!(escape("a_b c"), "a_005Fb_0020c");
        // Multi-byte characters escape each UTF-8 byte.
        assert_eq!(escape("é"), "_00C3_00A9");
    }

    #[test]
    fn route_metrics_are_not_escaped() {
        assert_eq!(
            route_concurrency_metric("my_app"),
            "http_my_app_concurrency"
        );
        assert_eq!(route_rate_metric("web"), "http_web_rate");
        assert_eq!(queue_key("ns", "web"), "ns/web");
    }
}
