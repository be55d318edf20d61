//! Static route and endpoint files, for running without Kubernetes (`KEDA_HTTP_ROUTES_FILE`,
//! `KEDA_HTTP_ENDPOINTS_FILE`). The Kubernetes watches replace both.
//!
//! Routes file: JSON, either a list of objects or a `{"items": [...]}` list, each object an
//! `InterceptorRoute` or `HTTPScaledObject` with `kind` set.
//!
//! Endpoints file: JSON object `{"<namespace>/<service>/<port number or name>":
//! {"addresses": ["10.0.0.1:8080", ...], "appProtocol": "kubernetes.io/h2c"}}`
//! (`appProtocol` optional).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use keda_http_api::{HTTPScaledObject, InterceptorRoute};

use crate::endpoints::{AppProtocol, EndpointSet, StaticEndpoints, Target, TargetPort};

/// Why a file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading failed.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The content is not what we expect.
    #[error("parse {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn read(path: &Path) -> Result<serde_json::Value, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| FileError::Parse {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads a routes file.
pub fn load_routes(
    path: &Path,
) -> Result<(Vec<InterceptorRoute>, Vec<HTTPScaledObject>), FileError> {
    let parse_error = |reason: String| FileError::Parse {
        path: path.display().to_string(),
        reason,
    };
    let items = match read(path)? {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut map) => match map.remove("items") {
            Some(serde_json::Value::Array(items)) => items,
            _ => vec![serde_json::Value::Object(map)],
        },
        _ => return Err(parse_error("expected a JSON list or object".into())),
    };
    let mut routes = Vec::new();
    let mut httpsos = Vec::new();
    for item in items {
        match item.get("kind").and_then(|k| k.as_str()) {
            Some("InterceptorRoute") => {
                routes.push(serde_json::from_value(item).map_err(|e| parse_error(e.to_string()))?)
            }
            Some("HTTPScaledObject") => {
                httpsos.push(serde_json::from_value(item).map_err(|e| parse_error(e.to_string()))?)
            }
            other => return Err(parse_error(format!("unsupported kind {other:?}"))),
        }
    }
    Ok((routes, httpsos))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileEndpoints {
    addresses: Vec<SocketAddr>,
    #[serde(default)]
    app_protocol: Option<String>,
}

/// Reads an endpoints file into `source`.
pub fn load_endpoints(path: &Path, source: &StaticEndpoints) -> Result<usize, FileError> {
    let parse_error = |reason: String| FileError::Parse {
        path: path.display().to_string(),
        reason,
    };
    let map: BTreeMap<String, FileEndpoints> =
        serde_json::from_value(read(path)?).map_err(|e| parse_error(e.to_string()))?;
    let count = map.len();
    for (key, endpoints) in map {
        let mut parts = key.splitn(3, '/');
        let (Some(ns), Some(svc), Some(port)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(parse_error(format!(
                "key {key:?} is not namespace/service/port"
            )));
        };
        let port = port
            .parse::<i32>()
            .map_or_else(|_| TargetPort::Name(Arc::from(port)), TargetPort::Number);
        source.set(
            Target {
                namespace: Arc::from(ns),
                service: Arc::from(svc),
                port,
            },
            EndpointSet {
                ready: endpoints.addresses.into_iter().collect(),
                app_protocol: AppProtocol::from_app_protocol(endpoints.app_protocol.as_deref()),
                ..EndpointSet::default()
            },
        );
    }
    Ok(count)
}
