//! Checks a real API server makes on request bodies: type, namespace and name consistency,
//! name syntax, server-side apply requirements.

use serde_json::{Map, Value, json};

use super::error::{ApiError, FieldError};
use super::kinds::ResourceKind;
use super::meta;
use super::write::WriteOptions;

/// Fills in `kind`/`apiVersion` (rejecting ones that do not match the URL) and ensures a
/// `metadata` map.
pub(super) fn normalise_type(kind: &ResourceKind, body: &mut Value) -> Result<(), ApiError> {
    let api_version = kind.api_version();
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != kind.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind \"{k}\" does not match the resource {} (kind {})",
                kind.plural, kind.kind
            )));
        }
        _ => {}
    }
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the apiVersion \"{v}\" does not match the request ({api_version})"
            )));
        }
        _ => {}
    }
    map.insert("kind".to_owned(), json!(kind.kind));
    map.insert("apiVersion".to_owned(), json!(api_version));
    if !map.get("metadata").is_some_and(Value::is_object) {
        map.insert("metadata".to_owned(), Value::Object(Map::new()));
    }
    Ok(())
}

/// The namespace a create lands in: the URL's (the body may repeat it, not contradict it);
/// "" for cluster-scoped kinds.
pub(super) fn resolve_namespace(
    kind: &ResourceKind,
    namespace: Option<&str>,
    body: &Value,
) -> Result<String, ApiError> {
    if !kind.namespaced {
        return Ok(String::new());
    }
    let in_body = meta::str_field(body, "namespace");
    match namespace {
        Some(ns) if !in_body.is_empty() && in_body != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        Some(ns) => Ok(ns.to_owned()),
        None => Err(ApiError::bad_request(format!(
            "{} is namespaced: create it under /namespaces/<namespace>/",
            kind.plural
        ))),
    }
}

/// What a real server requires of a server-side apply request.
pub(super) fn check_apply(
    kind: &ResourceKind,
    applied: &Value,
    name: &str,
    opts: &WriteOptions,
) -> Result<(), ApiError> {
    if opts.field_manager.is_none() {
        return Err(ApiError::invalid(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    if applied["apiVersion"].as_str().unwrap_or("").is_empty()
        || applied["kind"].as_str().unwrap_or("").is_empty()
    {
        return Err(ApiError::bad_request(
            "invalid object type: apiVersion and kind must be set in an apply patch",
        ));
    }
    check_body_name(kind, applied, name)
}

/// The body's `metadata.name`, when set, must be the URL's.
pub(super) fn check_body_name(
    kind: &ResourceKind,
    body: &Value,
    name: &str,
) -> Result<(), ApiError> {
    let in_body = meta::str_field(body, "name");
    if !in_body.is_empty() && in_body != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({in_body}) does not match the name on the URL ({name}) for {}",
            kind.plural
        )));
    }
    Ok(())
}

/// Names are lowercase RFC 1123 subdomains.
pub(super) fn validate_name(kind: &ResourceKind, name: &str) -> Result<(), ApiError> {
    let ok = name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            kind.kind
        )))
    }
}

/// Label keys and values, as `metav1validation.ValidateLabels` checks them: a key is an
/// optional DNS-1123 subdomain prefix and `/`, then a name of at most 63 characters; a value
/// is empty or a name of at most 63 characters (so a `/` in a value is refused).
pub(super) fn label_errors(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(labels) = object["metadata"]["labels"].as_object() else {
        return errors;
    };
    for (key, value) in labels {
        if let Some(why) = label_key_problem(key) {
            errors.push(FieldError::invalid("metadata.labels", &json!(key), why));
        }
        match value.as_str() {
            Some(v) if v.is_empty() || is_label_name(v) => {}
            Some(v) => errors.push(FieldError::invalid(
                "metadata.labels",
                &json!(v),
                format!(
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most {LABEL_NAME_MAX} characters; regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                ),
            )),
            None => errors.push(FieldError::invalid(
                "metadata.labels",
                value,
                "label values must be strings",
            )),
        }
    }
    errors
}

const LABEL_NAME_MAX: usize = 63;

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_label_name(s: &str) -> bool {
    s.len() <= LABEL_NAME_MAX
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A lowercase RFC 1123 subdomain of at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Some(
            "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".to_owned(),
        );
    }
    if is_label_name(name) {
        None
    } else {
        Some(format!(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, at most {LABEL_NAME_MAX} characters (an optional prefix is a DNS subdomain followed by '/')"
        ))
    }
}

/// What `discovery/v1` EndpointSlice validation checks of addresses: each address is an IP of
/// the slice's `addressType` (or a DNS name for `FQDN`) and, as a real API server insists, no
/// IP is loopback (127.0.0.0/8, ::1) or link-local (169.254.0.0/16, fe80::/10), unless
/// `allow_loopback` (a test-only relaxation of the loopback rule).
pub(super) fn endpoint_slice_errors(slice: &Value, allow_loopback: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let address_type = slice["addressType"].as_str().unwrap_or("");
    if !matches!(address_type, "IPv4" | "IPv6" | "FQDN") {
        let field = "addressType";
        errors.push(if address_type.is_empty() {
            FieldError::required(field)
        } else {
            FieldError::other(
                "FieldValueNotSupported",
                field,
                format!(
                    "Unsupported value: {address_type:?}: supported values: \"FQDN\", \"IPv4\", \"IPv6\""
                ),
            )
        });
        return errors;
    }
    let endpoints = slice["endpoints"].as_array().map_or(&[][..], Vec::as_slice);
    for (i, endpoint) in endpoints.iter().enumerate() {
        let addresses = endpoint["addresses"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        if addresses.is_empty() {
            errors.push(FieldError::required(format!("endpoints[{i}].addresses")));
        }
        for (j, address) in addresses.iter().enumerate() {
            let field = format!("endpoints[{i}].addresses[{j}]");
            let text = address.as_str().unwrap_or("");
            if let Some(why) = address_problem(address_type, text, allow_loopback) {
                errors.push(FieldError::invalid(field, address, why));
            }
        }
    }
    errors
}

fn address_problem(address_type: &str, text: &str, allow_loopback: bool) -> Option<String> {
    use std::net::IpAddr;
    if address_type == "FQDN" {
        return (!is_dns_subdomain(text)).then(|| "must be a valid DNS subdomain".to_owned());
    }
    let Ok(ip) = text.parse::<IpAddr>() else {
        return Some(format!("must be a valid {address_type} address"));
    };
    match (address_type, ip) {
        ("IPv4", IpAddr::V6(_)) => return Some("must be an IPv4 address".to_owned()),
        ("IPv6", IpAddr::V4(_)) => return Some("must be an IPv6 address".to_owned()),
        _ => {}
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    if link_local {
        return Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)".to_owned());
    }
    if ip.is_loopback() && !allow_loopback {
        return Some("may not be in the loopback range (127.0.0.0/8, ::1/128)".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_with_a_slash_are_refused_and_keys_may_have_a_prefix() {
        let ok = json!({"metadata": {"labels": {"app.kubernetes.io/name": "hello", "tier": "", "a_b": "x.y-z"}}});
        assert!(label_errors(&ok).is_empty());
        let bad = json!({"metadata": {"labels": {"owner": "ns/name"}}});
        let errors = label_errors(&bad);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .starts_with("metadata.labels: Invalid value: \"ns/name\"")
        );
        for key in ["Bad_Prefix/x", "a/b/c", "-x", &"k".repeat(64)] {
            let object = json!({"metadata": {"labels": {key: "v"}}});
            assert_eq!(label_errors(&object).len(), 1, "{key}");
        }
        let long = json!({"metadata": {"labels": {"k": "v".repeat(64)}}});
        assert_eq!(label_errors(&long).len(), 1);
    }

    #[test]
    fn slice_addresses_must_match_the_type_and_be_routable() {
        let slice = |t: &str, a: &str| json!({"addressType": t, "endpoints": [{"addresses": [a]}]});
        assert!(endpoint_slice_errors(&slice("IPv4", "198.51.100.7"), false).is_empty());
        assert!(endpoint_slice_errors(&slice("IPv6", "2001:db8::1"), false).is_empty());
        assert!(endpoint_slice_errors(&slice("FQDN", "svc.example.com"), false).is_empty());
        for (t, a) in [
            ("IPv4", "127.0.0.1"),
            ("IPv4", "127.1.2.3"),
            ("IPv6", "::1"),
            ("IPv4", "169.254.1.1"),
            ("IPv6", "fe80::1"),
            ("IPv4", "2001:db8::1"),
            ("IPv6", "10.0.0.1"),
            ("IPv4", "not-an-ip"),
        ] {
            let errors = endpoint_slice_errors(&slice(t, a), false);
            assert_eq!(errors.len(), 1, "{t} {a}");
            assert_eq!(errors[0].field, "endpoints[0].addresses[0]");
        }
        assert!(endpoint_slice_errors(&slice("IPv4", "127.0.0.1"), true).is_empty());
        assert!(!endpoint_slice_errors(&slice("IPv4", "169.254.1.1"), true).is_empty());
        assert!(!endpoint_slice_errors(&slice("IPX", "10.0.0.1"), false).is_empty());
    }
}
