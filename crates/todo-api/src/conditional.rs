//! Conditional reads: an item or a page of items carries a strong `ETag` made from its bytes,
//! and a request whose `If-None-Match` names that tag gets `304 Not Modified` with no body, so a
//! poller such as the board pays for a changed answer only.

use std::hash::Hasher;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The tag of a body: a 64-bit SipHash of its bytes, quoted. The same binary gives the same tag
/// on every replica, so a client may move between them.
fn tag_of(body: &[u8]) -> HeaderValue {
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(body);
    HeaderValue::try_from(format!("\"{:016x}\"", hasher.finish())).expect("hex digits only")
}

/// Whether `If-None-Match` names `tag` (RFC 9110 §13.1.2: weak comparison, `*` matches any).
/// Malformed entries match nothing, so the full answer is sent.
fn none_match(request: &HeaderMap, tag: &HeaderValue) -> bool {
    let tag = tag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|entry| entry == "*" || entry.strip_prefix("W/").unwrap_or(entry).as_bytes() == tag)
}

/// A 200 answer of JSON `body` with `headers` and its `ETag`, or a 304 when the client has it.
pub(crate) fn json(request: &HeaderMap, mut headers: HeaderMap, body: Vec<u8>) -> Response {
    let tag = tag_of(&body);
    // Caches may keep the answer but must ask again before using it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let matched = none_match(request, &tag);
    headers.insert(header::ETAG, tag);
    if matched {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::IF_NONE_MATCH, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn tags_follow_the_bytes() {
        assert_eq!(tag_of(b"[1]"), tag_of(b"[1]"));
        assert_ne!(tag_of(b"[1]"), tag_of(b"[2]"));
        assert_eq!(tag_of(b"").len(), 18);
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_lists() {
        let tag = tag_of(b"body");
        let text = tag.to_str().unwrap().to_string();
        assert!(none_match(&request(&[&text]), &tag));
        assert!(none_match(&request(&[&format!("W/{text}")]), &tag));
        assert!(none_match(&request(&[&format!("\"x\", {text}")]), &tag));
        assert!(none_match(&request(&["\"x\"", &text]), &tag));
        assert!(none_match(&request(&["*"]), &tag));
        assert!(!none_match(&request(&["\"x\""]), &tag));
        assert!(!none_match(&request(&[text.trim_matches('"')]), &tag));
        assert!(!none_match(&HeaderMap::new(), &tag));
    }

    #[test]
    fn a_match_is_304_without_a_body_and_keeps_the_tag() {
        let tag = tag_of(b"[]");
        let response = json(
            &request(&[tag.to_str().unwrap()]),
            HeaderMap::new(),
            b"[]".to_vec(),
        );
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::ETAG], tag);
        assert!(response.headers().get(header::CONTENT_TYPE).is_none());
        let response = json(&HeaderMap::new(), HeaderMap::new(), b"[]".to_vec());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::ETAG], tag);
    }
}
