//! The CustomResourceDefinitions of keda-http, as the chart installs them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{HTTPScaledObject, InterceptorRoute};

/// Why the CRDs could not be rendered.
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
}

/// Both CRDs, InterceptorRoute first.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![InterceptorRoute::crd(), HTTPScaledObject::crd()]
}

/// Renders one CRD as a YAML document.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, CrdError> {
    serde_saphyr::to_string(crd).map_err(|e| CrdError::Yaml {
        name: crd.metadata.name.clone().unwrap_or_default(),
        reason: e.to_string(),
    })
}
