//! Object paths from clients (`?path=`), checked before any store sees them.
//!
//! A path is relative, `/`-separated, of non-empty segments that are not `.` or `..`, with no
//! control character (NUL included), no backslash and no `#` (the local store's staging files
//! end in `#<n>`; a name like that would be hidden from listings), at most [`MAX_PATH_BYTES`]
//! bytes and [`MAX_SEGMENT_BYTES`] per segment. The query string is percent-decoded once, by
//! the router: `%2e%2e` arrives here as `..` and is refused; a doubly encoded `%252e` is the
//! literal name `%2e`, which names a file inside the store like any other.
//!
//! Other characters are kept: the store's [`Path`] percent-encodes what it cannot hold, and
//! [`display`] gives the name back as the client sent it.

use object_store::path::{Path, PathPart};

/// Longest path accepted.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest segment accepted (a file name on common file systems).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Why a path was refused; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {0}")]
pub struct BadPath(pub &'static str);

/// The store path of a client's `path`.
pub fn object_path(raw: &str) -> Result<Path, BadPath> {
    if raw.is_empty() {
        return Err(BadPath("must not be empty"));
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(BadPath("must be at most 1024 bytes"));
    }
    if raw.starts_with('/') {
        return Err(BadPath("must be relative (no leading /)"));
    }
    if raw.chars().any(char::is_control) {
        return Err(BadPath("must not contain control characters"));
    }
    if raw.contains('\\') {
        return Err(BadPath("must not contain a backslash"));
    }
    if raw.contains('#') {
        return Err(BadPath("must not contain #"));
    }
    let mut parts = Vec::new();
    for segment in raw.split('/') {
        match segment {
            "" => return Err(BadPath("must not have empty segments (// or a trailing /)")),
            "." | ".." => return Err(BadPath("must not contain . or .. segments")),
            s if s.len() > MAX_SEGMENT_BYTES => {
                return Err(BadPath("segments must be at most 255 bytes"));
            }
            s => parts.push(PathPart::from(s)),
        }
    }
    Ok(Path::from_iter(parts))
}

/// An optional listing prefix: empty means everything; otherwise the same rules as a path.
pub fn prefix(raw: Option<&str>) -> Result<Option<Path>, BadPath> {
    match raw.map(|p| p.trim_end_matches('/')) {
        None | Some("") => Ok(None),
        Some(p) => object_path(p).map(Some),
    }
}

/// A store path as the client named it (segments percent-decoded).
pub fn display(path: &Path) -> String {
    let mut out = String::with_capacity(path.as_ref().len());
    for (i, part) in path.parts().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&percent_encoding::percent_decode_str(part.as_ref()).decode_utf8_lossy());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn traversal_and_odd_names_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "a/../b",
            "./a",
            "a//b",
            "a/",
            "a\0b",
            "a\nb",
            "a\\..\\b",
            "take#2",
        ] {
            assert!(object_path(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(object_path(&"a".repeat(256)).is_err());
        assert!(object_path(&"a/".repeat(600)).is_err());
    }

    #[test]
    fn ordinary_names_keep_their_characters() {
        for good in [
            "SampleVideo_1280x720_1mb.mp4",
            "shows/season 1/épisode [2] ~ 50%.mp4",
            "%2e%2e",
            ".hidden",
            "a..b",
        ] {
            let path = object_path(good).unwrap();
            assert_eq!(display(&path), good);
        }
    }

    proptest! {
        /// Whatever a client sends, an accepted path has no part that climbs or is empty, and
        /// reads back as sent.
        #[test]
        fn accepted_paths_stay_inside_and_round_trip(raw in "[a-z./%#\\\\ \u{0}-\u{1f}é]{0,40}") {
            if let Ok(path) = object_path(&raw) {
                for part in path.parts() {
                    let decoded = display(&Path::from_iter([part]));
                    prop_assert!(decoded != ".." && decoded != "." && !decoded.is_empty());
                }
                prop_assert_eq!(display(&path), raw);
            }
        }
    }
}
