//! Path prefixes: normalised by trimming `/` at both ends (so `/api/`, `api` and `/api` are
//! one prefix and `/`, empty and no paths all mean the root), matched on segment boundaries
//! (`/api` matches `/api`, `/api/` and `/api/x`, never `/apiv2`). Paths are compared as sent:
//! not percent-decoded, and empty segments are kept (`/a//b/` is the prefix `a//b`, which
//! matches `/a//b/c` but not `/a/b/c`).

/// The normalised form of a configured prefix or a request path: `/` trimmed at both ends.
pub fn path_prefix(path: &str) -> &str {
    path.trim_matches('/')
}

/// Whether `path` (a request path, any form) lies under `prefix` (normalised with
/// [`path_prefix`]); the root prefix `""` holds every path.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let path = path_prefix(path);
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_trimmed() {
        assert_eq!(path_prefix("/api/"), "api");
        assert_eq!(path_prefix("/"), "");
        assert_eq!(path_prefix(""), "");
        assert_eq!(path_prefix("/a//b/"), "a//b");
        assert_eq!(path_prefix("//a"), "a");
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(path_has_prefix("/api", "api"));
        assert!(path_has_prefix("/api/", "api"));
        assert!(path_has_prefix("/api/x", "api"));
        assert!(!path_has_prefix("/apiv2", "api"));
        assert!(path_has_prefix("/anything", ""));
        assert!(path_has_prefix("", ""));
        assert!(path_has_prefix("/a//b/c", path_prefix("/a//b/")));
        assert!(!path_has_prefix("/a/b/c", path_prefix("/a//b/")));
        assert!(path_has_prefix("/a//b", "a"));
    }
}
