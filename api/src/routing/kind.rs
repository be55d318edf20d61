//! Which resource a route came from: the one `RouteKind` that keys, collection, the
//! interceptor and the operator share.

use std::fmt;

use serde::Serialize;

/// Which resource a route came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RouteKind {
    /// `http.keda.sh/v1beta1` InterceptorRoute.
    InterceptorRoute,
    /// `http.keda.sh/v1alpha1` HTTPScaledObject, converted.
    HTTPScaledObject,
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InterceptorRoute => "InterceptorRoute",
            Self::HTTPScaledObject => "HTTPScaledObject",
        })
    }
}
