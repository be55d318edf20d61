//! `keda-http-api`: the shared contract of keda-http.
//!
//! Owns:
//! - the Kubernetes custom resource types [`InterceptorRoute`] (`http.keda.sh/v1beta1`) and
//!   [`HTTPScaledObject`] (`http.keda.sh/v1alpha1`, shortName `httpso`), field for field as the
//!   official add-on serializes them, and the HTTPScaledObject → route conversion
//!   ([`convert`]);
//! - the subset of KEDA's [`ScaledObject`] (`keda.sh/v1alpha1`) that the operator writes and
//!   the local cluster reads;
//! - Go-syntax durations ([`duration`]);
//! - the interceptor → scaler wire format ([`queue`]: `/queue` and the `/queue/watch` stream);
//! - the CRD manifests ([`crd`]), printed by the `crdgen` binary, and the test stand-in for
//!   KEDA's ScaledObject CRD;
//! - client-side validation mirroring the CRDs' CEL rules and bounds, and manifest parsing that
//!   names the failing field ([`validation`]);
//! - the routing semantics the interceptor and the operator share ([`routing`]): host and
//!   path normalisation, the rule matcher, route keys and conflicts, route collection (with
//!   invalid objects dropped), and test builders.
//!
//! It does not talk to Kubernetes or the network; the programs do.

mod cel;
mod conditions;
pub mod convert;
pub mod crd;
pub mod duration;
/// KEDA's externalscaler gRPC server and client (feature `externalscaler`).
#[cfg(feature = "externalscaler")]
pub mod externalscaler;
pub mod http_scaled_object;
pub mod interceptor_route;
pub mod queue;
pub mod routing;
pub mod scaled_object;
pub mod validation;

pub use duration::{GoDuration, parse_crd_duration, parse_go_duration};
pub use http_scaled_object::{HTTPScaledObject, HTTPScaledObjectSpec, HTTPScaledObjectStatus};
pub use interceptor_route::{InterceptorRoute, InterceptorRouteSpec, InterceptorRouteStatus};
pub use scaled_object::{ScaledObject, ScaledObjectSpec, ScaledObjectStatus};
pub use validation::{FieldError, ParseError, ValidationError};
