//! Host normalisation, one answer for every caller.
//!
//! A request authority or a configured host is reduced to a bare host:
//!
//! - a port (`:` followed by digits only, possibly none) is dropped: `example.com:8080` →
//!   `example.com`;
//! - a `:` suffix that is not all digits is not a port: `example.com:abc` stays whole and
//!   matches only a request whose host is exactly that;
//! - IPv6 literals lose their brackets and port: `[::1]:80` and `[::1]` → `::1`; a bare
//!   literal (more than one `:`, no brackets) such as `::1` has no port and stays as it is;
//! - one trailing `.` (the fully qualified form) is dropped: `example.com.` → `example.com`;
//! - letters are folded to lower case (DNS names and `Host` are case-insensitive).
//!
//! A configured host is then `*` or empty (any host), `*.suffix` (any host ending in
//! `.suffix`, at any depth, but not `suffix` itself) or an exact host.

use std::borrow::Cow;
use std::fmt;

/// A bare host from an authority: port, IPv6 brackets and one trailing dot removed; case kept.
/// Never allocates.
pub fn request_host(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => &rest[..end],
            None => authority,
        };
    }
    let host = match authority.split_once(':') {
        // More than one colon: a bare IPv6 literal, which cannot carry a port.
        Some((_, after)) if after.contains(':') => authority,
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// [`request_host`] folded to lower case; allocates only when the host has upper-case letters.
pub fn normalise_host(authority: &str) -> Cow<'_, str> {
    let host = request_host(authority);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// A configured host, normalised.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// Exactly this host (lower case, bare).
    Exact(String),
    /// Any host ending in `.` + this suffix (lower case); an empty suffix matches nothing.
    Wildcard(String),
    /// Any host: `*`, empty, or a rule without hosts.
    Any,
}

impl HostPattern {
    /// Normalises a configured host (surrounding whitespace is ignored).
    pub fn parse(configured: &str) -> Self {
        let host = normalise_host(configured.trim());
        if host.is_empty() || host == "*" {
            Self::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            Self::Wildcard(suffix.to_owned())
        } else {
            Self::Exact(host.into_owned())
        }
    }

    /// Whether a request host, already normalised ([`normalise_host`]), matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => exact == host,
            Self::Wildcard(suffix) => {
                !suffix.is_empty()
                    && host
                        .strip_suffix(suffix.as_str())
                        .is_some_and(|label| label.ends_with('.'))
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(host) => f.write_str(host),
            Self::Wildcard(suffix) => write!(f, "*.{suffix}"),
            Self::Any => f.write_str("*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_reduce_to_bare_hosts() {
        assert_eq!(request_host("a.com:80"), "a.com");
        assert_eq!(request_host("a.com:"), "a.com");
        assert_eq!(request_host("a.com"), "a.com");
        assert_eq!(request_host("[::1]:80"), "::1");
        assert_eq!(request_host("[::1]"), "::1");
        assert_eq!(
            request_host("::1"),
            "::1",
            "a bare IPv6 literal has no port"
        );
        assert_eq!(request_host("fe80::1:8080"), "fe80::1:8080");
        assert_eq!(
            request_host("example.com:abc"),
            "example.com:abc",
            "not a port"
        );
        assert_eq!(request_host("EXAMPLE.com."), "EXAMPLE.com");
        assert_eq!(normalise_host("EXAMPLE.com.:443"), "example.com");
        assert_eq!(request_host(""), "");
    }

    #[test]
    fn configured_hosts_become_patterns() {
        use HostPattern::{Any, Exact, Wildcard};
        assert_eq!(HostPattern::parse(""), Any);
        assert_eq!(HostPattern::parse("*"), Any);
        assert_eq!(HostPattern::parse(" * "), Any);
        assert_eq!(HostPattern::parse("*:80"), Any);
        assert_eq!(HostPattern::parse("*.a.b"), Wildcard("a.b".into()));
        assert_eq!(HostPattern::parse("*.A.b:8080"), Wildcard("a.b".into()));
        assert_eq!(
            HostPattern::parse("EXAMPLE.com."),
            Exact("example.com".into())
        );
        assert_eq!(
            HostPattern::parse("example.com:abc"),
            Exact("example.com:abc".into())
        );
        assert_eq!(HostPattern::parse("::1"), Exact("::1".into()));
        assert_eq!(HostPattern::parse("[::1]:80"), Exact("::1".into()));
        assert_eq!(HostPattern::parse("[::1]:80"), HostPattern::parse("::1"));
    }

    #[test]
    fn wildcards_match_subdomains_at_any_depth_but_not_the_apex() {
        let w = HostPattern::parse("*.a.b");
        assert!(w.matches("x.a.b"));
        assert!(w.matches("y.x.a.b"));
        assert!(!w.matches("a.b"));
        assert!(!w.matches("xa.b"));
        assert!(!HostPattern::Wildcard(String::new()).matches("x."));
        assert!(HostPattern::Any.matches(""));
        assert!(HostPattern::parse("A.com").matches("a.com"));
        assert!(HostPattern::parse("::1").matches(&normalise_host("[::1]:8080")));
        assert!(!HostPattern::parse("example.com:abc").matches("example.com"));
    }

    #[test]
    fn patterns_display_as_configured() {
        assert_eq!(HostPattern::parse("").to_string(), "*");
        assert_eq!(HostPattern::parse("*.A.b").to_string(), "*.a.b");
        assert_eq!(HostPattern::parse("A.b:1").to_string(), "a.b");
    }
}
