//! What a request asks for, checked and normalised once (`normalize`): its host and path, as
//! routing, authentication, limits and the request sent upstream all use them.
//!
//! Refused with 400, as RFC 9112 section 3.2 and nginx do: an HTTP/1.1 request without `Host`,
//! with more than one, or with one that is malformed; an HTTP/2 request whose `host` header
//! disagrees with its `:authority`; a request with more than one `Authorization`. An
//! absolute-form target's authority wins over `Host` (RFC 9112 section 3.2.2).

use axum::extract::Request;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Version};

use crate::normalize::{self, Refused};

/// A request's normalised host and path.
#[derive(Debug)]
pub(crate) struct Target {
    /// The normalised path, then the query as received.
    pub(crate) path_and_query: PathAndQuery,
    /// Where the path ends in `path_and_query`.
    path_len: usize,
    /// The host as sent upstream (`name[:port]`), normalised.
    host: Option<HeaderValue>,
    /// Where the name ends in `host`.
    name_len: usize,
    /// Whether `host` differs from the request's own `Host` header (so it must be replaced).
    pub(crate) host_changed: bool,
    /// The path with `%2F` and `%5C` read as separators, when it has either.
    pub(crate) slashes_decoded: Option<Result<String, Refused>>,
}

impl Target {
    /// Checks and normalises `request`'s target.
    pub(crate) fn of(request: &Request) -> Result<Target, Refused> {
        if request.method() == Method::CONNECT {
            return Err(Refused("CONNECT is not served here"));
        }
        // One pass over the headers counts the lines that must be single.
        let (mut hosts, mut authorizations, mut host_header) = (0, 0, None);
        for (name, value) in request.headers() {
            if name == header::HOST {
                hosts += 1;
                host_header = Some(value);
            } else if name == header::AUTHORIZATION {
                authorizations += 1;
            }
        }
        if hosts > 1 {
            return Err(Refused("more than one Host header"));
        }
        if authorizations > 1 {
            return Err(Refused("more than one Authorization header"));
        }
        let authority = request.uri().authority().map(|a| a.as_str());
        let host_text = match (request.version(), authority, host_header) {
            (Version::HTTP_2, Some(authority), Some(host)) => {
                let host = host.to_str().map_err(|_| Refused("invalid host"))?;
                if !normalize::host(host)?
                    .value
                    .eq_ignore_ascii_case(&normalize::host(authority)?.value)
                {
                    return Err(Refused("the host header disagrees with :authority"));
                }
                Some(authority)
            }
            // An absolute-form target, or HTTP/2's :authority.
            (_, Some(authority), _) => Some(authority),
            (_, None, Some(host)) => Some(host.to_str().map_err(|_| Refused("invalid host"))?),
            (Version::HTTP_11, None, None) => {
                return Err(Refused("an HTTP/1.1 request without Host"));
            }
            (_, None, None) => None,
        };
        let (host, name_len, host_changed) = match host_text {
            None => (None, 0, false),
            Some(text) => {
                let normal = normalize::host(text)?;
                let name_len = normal.name.len();
                let unchanged =
                    host_header.is_some_and(|h| h.as_bytes() == normal.value.as_bytes());
                let value = match (unchanged, host_header) {
                    (true, Some(header)) => header.clone(),
                    _ => {
                        HeaderValue::from_str(&normal.value).map_err(|_| Refused("invalid host"))?
                    }
                };
                (Some(value), name_len, !unchanged)
            }
        };

        let raw = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let raw_path = raw.path();
        let path = normalize::path(raw_path)?;
        let slashes_decoded = normalize::path_with_encoded_slashes(raw_path);
        let path_len = path.len();
        let path_and_query = if path == raw_path {
            // Unchanged, the target keeps sharing the request's bytes.
            raw
        } else {
            let text = match raw.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.into_owned(),
            };
            PathAndQuery::try_from(text).map_err(|_| Refused("invalid path"))?
        };
        Ok(Target {
            path_and_query,
            path_len,
            host,
            name_len,
            host_changed,
            slashes_decoded,
        })
    }

    /// The normalised path.
    pub(crate) fn path(&self) -> &str {
        &self.path_and_query.as_str()[..self.path_len]
    }

    /// The query, if any.
    pub(crate) fn query(&self) -> Option<&str> {
        self.path_and_query.query()
    }

    /// The host name routes match on: lower case, without port or trailing dot.
    pub(crate) fn host_name(&self) -> Option<&str> {
        let host = self.host.as_ref()?;
        std::str::from_utf8(&host.as_bytes()[..self.name_len]).ok()
    }

    /// The `Host` to send upstream.
    pub(crate) fn host_value(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, target: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = http::Request::builder().uri(target).version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn the_host_comes_from_the_target_or_host_and_is_single() {
        let t = Target::of(&request(
            Version::HTTP_11,
            "/x",
            &[("host", "A.Example.:80")],
        ))
        .unwrap();
        assert_eq!(t.host_name(), Some("a.example"));
        assert_eq!(t.host_value().unwrap(), "a.example:80");
        assert!(t.host_changed);
        let t = Target::of(&request(Version::HTTP_11, "/x", &[("host", "a.example")])).unwrap();
        assert!(!t.host_changed);
        // Absolute form: its authority wins.
        let t = Target::of(&request(
            Version::HTTP_11,
            "http://secret.example/x",
            &[("host", "public.example")],
        ))
        .unwrap();
        assert_eq!(t.host_name(), Some("secret.example"));
        assert!(t.host_changed);
        for (version, target, headers) in [
            (Version::HTTP_11, "/x", &[][..]),
            (Version::HTTP_11, "/x", &[("host", "a"), ("host", "b")][..]),
            (Version::HTTP_11, "/x", &[("host", "a b/c@d")][..]),
            (
                Version::HTTP_11,
                "/x",
                &[
                    ("host", "a"),
                    ("authorization", "Basic x"),
                    ("authorization", "Basic y"),
                ][..],
            ),
            (
                Version::HTTP_2,
                "http://a.example/x",
                &[("host", "b.example")][..],
            ),
        ] {
            assert!(
                Target::of(&request(version, target, headers)).is_err(),
                "{target} {headers:?}"
            );
        }
        let h2 = Target::of(&request(
            Version::HTTP_2,
            "http://a.example/x",
            &[("host", "A.example")],
        ));
        assert_eq!(h2.unwrap().host_name(), Some("a.example"));
        let h10 = Target::of(&request(Version::HTTP_10, "/x", &[])).unwrap();
        assert_eq!(h10.host_name(), None);
    }

    #[test]
    fn the_path_is_normalised_and_the_query_kept() {
        let t = Target::of(&request(
            Version::HTTP_11,
            "/a/./b/../%63?q=%2e",
            &[("host", "h")],
        ))
        .unwrap();
        assert_eq!(t.path(), "/a/c");
        assert_eq!(t.query(), Some("q=%2e"));
        assert_eq!(t.path_and_query.as_str(), "/a/c?q=%2e");
        assert!(t.slashes_decoded.is_none());
        let t = Target::of(&request(Version::HTTP_11, "/a%2fb", &[("host", "h")])).unwrap();
        assert_eq!(t.slashes_decoded, Some(Ok("/a/b".to_string())));
    }
}
