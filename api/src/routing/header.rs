//! Header matchers: a name (case-insensitive) that must be present and, when a value is
//! given, one of the header's values equal to it (exact, case-sensitive). A matcher whose name
//! is not a valid header name matches nothing, so its rule never matches.

use http::{HeaderMap, HeaderName};

use crate::interceptor_route::HeaderMatch;

/// A header matcher compiled for lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatcher {
    name: HeaderName,
    value: Option<Box<[u8]>>,
}

impl HeaderMatcher {
    /// Compiles one matcher; `None` when the name is not a valid header name.
    pub fn compile(m: &HeaderMatch) -> Option<Self> {
        let name = HeaderName::from_bytes(m.name.as_bytes()).ok()?;
        Some(Self {
            name,
            value: m.value.as_ref().map(|v| v.as_bytes().into()),
        })
    }

    /// Compiles a rule's matchers; `None` when any name is invalid (the rule is unmatchable).
    pub fn compile_all(matchers: &[HeaderMatch]) -> Option<Box<[Self]>> {
        matchers.iter().map(Self::compile).collect()
    }

    /// Whether a value is required (rather than presence only).
    pub fn is_valued(&self) -> bool {
        self.value.is_some()
    }

    /// Whether `headers` satisfy this matcher.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        match &self.value {
            None => headers.contains_key(&self.name),
            Some(want) => headers
                .get_all(&self.name)
                .iter()
                .any(|v| v.as_bytes() == &**want),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn matcher(name: &str, value: Option<&str>) -> Option<HeaderMatcher> {
        HeaderMatcher::compile(&HeaderMatch {
            name: name.into(),
            value: value.map(Into::into),
        })
    }

    #[test]
    fn names_fold_case_values_do_not() {
        let mut headers = HeaderMap::new();
        headers.append("x-env", HeaderValue::from_static("a"));
        headers.append("x-env", HeaderValue::from_static("Prod"));
        assert!(matcher("X-Env", None).unwrap().matches(&headers));
        assert!(matcher("X-Env", Some("Prod")).unwrap().matches(&headers));
        assert!(!matcher("X-Env", Some("prod")).unwrap().matches(&headers));
        assert!(!matcher("x-other", None).unwrap().matches(&headers));
        assert!(matcher("bad name", None).is_none());
    }
}
