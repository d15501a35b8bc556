//! A request's target as the gateway routes, authorises and forwards it: one normalised path and
//! one normalised host, so that no spelling of a protected path or host can reach a route
//! meant for another.
//!
//! Paths, as nginx does before it matches a location:
//! - `%XX` of an unreserved character (letters, digits, `-._~`) is decoded; every other `%XX`
//!   stays encoded (hex in upper case); a `%` without two hex digits, and `%00`, are refused;
//! - `.` and `..` segments are resolved (RFC 3986 section 5.2.4); a `..` above `/` is refused;
//! - runs of `/` are merged.
//!
//! `%2F` and `%5C` stay encoded and never separate segments here, but a server behind the
//! gateway may decode them and see other segments. So when a path holds either, it is read a
//! second time with them as separators; if that reading is refused or lands on another route,
//! the request is refused as ambiguous (see `proxy`).
//!
//! Hosts: lower case, one trailing dot removed, a port of at most five digits up to 65535;
//! names of letters, digits, `-`, `.`, `_` and `~` (no empty label), or IP literals. Anything
//! else is refused.

use std::borrow::Cow;

/// Why a target is refused (400); the text names the problem for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub(crate) &'static str);

/// The normalised form of `path` (the part of the target before `?`); borrowed when it is
/// normalised already, as nearly every path is.
pub(crate) fn path(path: &str) -> Result<Cow<'_, str>, Refused> {
    normalize_path(path, false)
}

/// `path` read with `%2F` and `%5C` as separators, when it holds either: what a server that
/// decodes them would see. `None` when it holds neither.
pub(crate) fn path_with_encoded_slashes(path: &str) -> Option<Result<String, Refused>> {
    let has_encoded_slash = path.as_bytes().contains(&b'%')
        && (contains_ignore_case(path, "%2f") || contains_ignore_case(path, "%5c"));
    has_encoded_slash.then(|| normalize_path(path, true).map(Cow::into_owned))
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn normalize_path(path: &str, slashes_decoded: bool) -> Result<Cow<'_, str>, Refused> {
    if !path.starts_with('/') {
        return Err(Refused("the request target is not an absolute path"));
    }
    if !slashes_decoded && is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    // Decode what may be decoded; `/` from `%2F` counts as a separator only when asked.
    let bytes = path.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        let (Some(high), Some(low)) = (
            bytes.get(i + 1).and_then(|h| hex(*h)),
            bytes.get(i + 2).and_then(|l| hex(*l)),
        ) else {
            return Err(Refused("invalid percent-encoding in the path"));
        };
        let value = high << 4 | low;
        if value == 0 {
            return Err(Refused("%00 in the path"));
        }
        if is_unreserved(value) || (slashes_decoded && (value == b'/' || value == b'\\')) {
            decoded.push(if value == b'\\' { b'/' } else { value });
        } else {
            decoded.extend_from_slice(&[
                b'%',
                HEX[(value >> 4) as usize],
                HEX[(value & 15) as usize],
            ]);
        }
        i += 3;
    }
    // Resolve dot segments and merge slashes.
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split(|&b| b == b'/').skip(1) {
        trailing_slash = false;
        match segment {
            b"" => trailing_slash = true,
            b"." => trailing_slash = true,
            b".." => {
                if segments.pop().is_none() {
                    return Err(Refused("the path climbs above the root"));
                }
                trailing_slash = true;
            }
            segment => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        // Made of the path's own ASCII bytes, and decoded unreserved (ASCII) characters.
        out.push_str(std::str::from_utf8(segment).map_err(|_| Refused("invalid path"))?);
    }
    if segments.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Whether `path` needs no work: no `%`, no empty, `.` or `..` segment.
fn is_normal(path: &[u8]) -> bool {
    let mut previous = b'/';
    let mut i = 1;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            return false;
        }
        if previous == b'/' && (b == b'/' || (b == b'.' && segment_is_dots(&path[i..]))) {
            return false;
        }
        previous = b;
        i += 1;
    }
    true
}

/// Whether the segment starting here is `.` or `..`.
fn segment_is_dots(rest: &[u8]) -> bool {
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    matches!(&rest[..end], b"." | b"..")
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A normalised host: the name routes match on, and the value to send as `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host<'a> {
    /// Lower case, without a trailing dot or the port; IPv6 literals keep their brackets.
    pub(crate) name: Cow<'a, str>,
    /// `name`, then `:port` when one was given: borrowed when it is the value as received.
    pub(crate) value: Cow<'a, str>,
}

/// The normalised form of a `Host` value (or a target's authority), in one pass over its bytes.
pub(crate) fn host(value: &str) -> Result<Host<'_>, Refused> {
    let invalid = Refused("invalid host");
    let bytes = value.as_bytes();
    if bytes.first() == Some(&b'[') {
        return ip_literal(value);
    }
    // The name: labels of letters, digits, `-`, `_`, `~`, between single dots.
    let mut name_end = bytes.len();
    let mut upper = false;
    let mut label_len = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => label_len += 1,
            b'A'..=b'Z' => {
                upper = true;
                label_len += 1;
            }
            b'.' if label_len > 0 => label_len = 0,
            b':' => {
                name_end = i;
                break;
            }
            _ => return Err(invalid),
        }
    }
    let name = &value[..name_end];
    let trailing_dot = name.ends_with('.');
    // An empty name, or an empty label other than the last (one trailing dot).
    if name.is_empty() || (label_len == 0 && !trailing_dot) || name == "." {
        return Err(invalid);
    }
    let port = match bytes.get(name_end + 1..) {
        None => None,
        Some(port) => {
            if port.len() > 5
                || !port.iter().all(u8::is_ascii_digit)
                || port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) > 65535
            {
                return Err(invalid);
            }
            Some(&value[name_end + 1..])
        }
    };
    if !upper && !trailing_dot && port != Some("") {
        return Ok(Host {
            name: Cow::Borrowed(name),
            value: Cow::Borrowed(value),
        });
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let value = match port {
        Some(port) if !port.is_empty() => format!("{name}:{port}"),
        _ => name.clone(),
    };
    Ok(Host {
        name: Cow::Owned(name),
        value: Cow::Owned(value),
    })
}

/// An IPv6 literal (`[::1]`), with an optional port.
fn ip_literal(value: &str) -> Result<Host<'_>, Refused> {
    let invalid = Refused("invalid host");
    let end = value.find(']').ok_or(invalid)?;
    value[1..end]
        .parse::<std::net::Ipv6Addr>()
        .map_err(|_| invalid)?;
    let port = match &value[end + 1..] {
        "" => None,
        rest => Some(rest.strip_prefix(':').ok_or(invalid)?),
    };
    if let Some(port) = port
        && (port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u32>().is_ok_and(|p| p > 65535))
    {
        return Err(invalid);
    }
    let name = &value[..end + 1];
    if port == Some("") {
        return Ok(Host {
            name: Cow::Borrowed(name),
            value: Cow::Borrowed(name),
        });
    }
    Ok(Host {
        name: Cow::Borrowed(name),
        value: Cow::Borrowed(value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_resolved_and_merged_as_nginx_does() {
        for (raw, normal) in [
            ("/", "/"),
            ("/auth/x", "/auth/x"),
            ("/%61uth/x", "/auth/x"),
            ("//auth/x", "/auth/x"),
            ("/./auth/x", "/auth/x"),
            ("/public/../auth/x", "/auth/x"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/.b/..c/...", "/a/.b/..c/..."),
            ("/a/%2e%2e/b", "/b"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb/../c", "/c"),
            ("/%7euser/%41", "/~user/A"),
            ("/%e4%b8%ad", "/%E4%B8%AD"),
            ("/a///b//", "/a/b/"),
        ] {
            assert_eq!(path(raw).unwrap(), normal, "{raw}");
        }
        assert!(matches!(path("/plain/path.html"), Ok(Cow::Borrowed(_))));
        for bad in [
            "/..", "/a/../..", "/%2e%2e", "/%2e%2E/", "/%", "/%4", "/%zz", "/a%00b", "*", "x",
        ] {
            assert!(path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encoded_slashes_are_read_again_as_separators() {
        assert_eq!(path_with_encoded_slashes("/plain"), None);
        assert_eq!(
            path_with_encoded_slashes("/auth%2fx"),
            Some(Ok("/auth/x".to_string()))
        );
        assert_eq!(
            path_with_encoded_slashes("/x/..%2fauth/x"),
            Some(Ok("/auth/x".to_string()))
        );
        assert_eq!(
            path_with_encoded_slashes("/x%5C..%5C..%5Cetc"),
            Some(Err(Refused("the path climbs above the root")))
        );
        // Without decoding, `..%2fauth` is one segment and nothing climbs.
        assert_eq!(path("/x/..%2fauth/x").unwrap(), "/x/..%2Fauth/x");
    }

    #[test]
    fn hosts_are_lower_cased_without_trailing_dot_and_validated() {
        let normal = |raw: &str| host(raw).map(|h| (h.name.into_owned(), h.value.into_owned()));
        assert_eq!(
            normal("a.example"),
            Ok(("a.example".into(), "a.example".into()))
        );
        assert_eq!(
            normal("Secret.Example.:80"),
            Ok(("secret.example".into(), "secret.example:80".into()))
        );
        assert_eq!(
            normal("secret.example."),
            Ok(("secret.example".into(), "secret.example".into()))
        );
        assert_eq!(
            normal("127.0.0.1:8080"),
            Ok(("127.0.0.1".into(), "127.0.0.1:8080".into()))
        );
        assert_eq!(
            normal("[::1]:8080"),
            Ok(("[::1]".into(), "[::1]:8080".into()))
        );
        assert_eq!(normal("a:"), Ok(("a".into(), "a".into())));
        for bad in [
            "secret.example:80:80",
            "a b/c@d",
            "a..b",
            ".a",
            "a.example..",
            "",
            ":80",
            "a:65536",
            "a:123456",
            "a:8x",
            "[::1",
            "[zz]",
            "[::1]x",
            "a%2eb",
            "a/b",
        ] {
            assert!(host(bad).is_err(), "{bad:?}");
        }
    }
}
