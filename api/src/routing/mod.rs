//! Routing semantics shared by the interceptor (which routes by them) and the operator (which
//! reports conflicts by them): one definition of each, compat §2.1, §2.3 and §3.
//!
//! - [`host`]: host normalisation. A configured host becomes a [`HostPattern`] (exact,
//!   `*.suffix` wildcard, or any host); a request authority becomes a bare, port-free host
//!   with [`request_host`] / [`normalise_host`].
//! - [`path`]: path-prefix normalisation and the segment-aware prefix test.
//! - [`header`]: header matchers, compiled once ([`HeaderMatcher`]).
//! - [`matcher`]: [`rule_matches`], the plain definition of "this request matches this
//!   rule" that the interceptor's index must agree with, and that static routes use directly.
//! - [`kind`]: the one [`RouteKind`] (InterceptorRoute or HTTPScaledObject).
//! - [`key`]: the normalised [`RouteKey`] (host + path prefix + header set) a route claims, and
//!   conflict detection between routes.
//! - [`collect`](mod@collect): turning watched InterceptorRoutes and HTTPScaledObjects into
//!   [`RouteSource`]s: HTTPScaledObjects converted, invalid objects dropped with their reason,
//!   an InterceptorRoute winning a namespace/name clash.
//! - [`builders`]: small constructors for specs and objects, for tests in every crate.
//!
//! Precedence between matching routes (exact host, then most specific wildcard, then
//! catch-all; longest path prefix; more header matchers first) is the index's business and
//! lives in the interceptor; this module says only what matches.

pub mod builders;
pub mod collect;
pub mod header;
pub mod host;
pub mod key;
pub mod kind;
pub mod matcher;
pub mod path;

pub use collect::{Collection, RouteSource, SkipReason, Skipped, collect, collect_unchecked};
pub use header::HeaderMatcher;
pub use host::{HostPattern, normalise_host, request_host};
pub use key::{Conflict, RouteId, RouteKey, conflict_message, conflicts, keys};
pub use kind::RouteKind;
pub use matcher::rule_matches;
pub use path::{path_has_prefix, path_prefix};
