//! Reading an object: `GET`/`HEAD /video?path=`, with the conditional requests and byte
//! ranges a browser's `<video>` element and caches use.
//!
//! The order is RFC 9110's (section 13.2.2): `If-Match`, else `If-Unmodified-Since` (412 when
//! they fail); `If-None-Match`, else `If-Modified-Since` (304); then `Range`, honoured only when
//! `If-Range`, if sent, still names this version. One satisfiable range → 206 with
//! `Content-Range`; none satisfiable, or too many (over 100) → 416 with
//! `Content-Range: bytes */<size>`; a malformed `Range` is ignored (200, the whole object), as
//! RFC 9110 asks; several ranges → 200 with the whole object (no `multipart/byteranges`:
//! players ask for one range at a time).

use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use http_range_header::RangeUnsatisfiableError;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectMeta};

use crate::error::StorageError;
use crate::key;
use crate::store::Store;

/// What a version of an object is known by.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    /// Quoted, as it goes in `ETag`.
    pub(crate) etag: Option<String>,
    /// Whole seconds, as HTTP dates have them.
    pub(crate) modified: SystemTime,
    pub(crate) size: u64,
}

impl Version {
    pub(crate) fn of(meta: &ObjectMeta) -> Version {
        let secs = meta.last_modified.timestamp().max(0) as u64;
        Version {
            etag: meta.e_tag.as_deref().map(quoted),
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            size: meta.size,
        }
    }
}

/// An entity tag in quotes (local files' tags come bare; Azure's and S3's quoted).
pub(crate) fn quoted(tag: &str) -> String {
    if tag.starts_with('"') || tag.starts_with("W/\"") {
        tag.to_string()
    } else {
        format!("\"{tag}\"")
    }
}

/// What to answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    PreconditionFailed,
    NotModified,
    Whole,
    Part(RangeInclusive<u64>),
    Unsatisfiable,
}

/// The tags of an `If-Match`/`If-None-Match` list; `None` for `*`.
fn tags(value: &str) -> Option<Vec<&str>> {
    let value = value.trim();
    if value == "*" {
        return None;
    }
    Some(
        value
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect(),
    )
}

fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    header_str(headers, name).and_then(|v| httpdate::parse_http_date(v).ok())
}

/// Decides the answer from the request's headers and the object's current version.
pub(crate) fn plan(headers: &HeaderMap, version: &Version) -> Plan {
    let etag = version.etag.as_deref();
    if let Some(value) = header_str(headers, header::IF_MATCH) {
        // Strong comparison: a weak tag never matches.
        let matches = match tags(value) {
            None => true,
            Some(list) => etag.is_some_and(|e| !e.starts_with("W/") && list.contains(&e)),
        };
        if !matches {
            return Plan::PreconditionFailed;
        }
    } else if let Some(since) = date(headers, header::IF_UNMODIFIED_SINCE)
        && version.modified > since
    {
        return Plan::PreconditionFailed;
    }
    if let Some(value) = header_str(headers, header::IF_NONE_MATCH) {
        // Weak comparison.
        let matches = match tags(value) {
            None => true,
            Some(list) => etag.is_some_and(|e| list.iter().any(|t| opaque(t) == opaque(e))),
        };
        if matches {
            return Plan::NotModified;
        }
    } else if let Some(since) = date(headers, header::IF_MODIFIED_SINCE)
        && version.modified <= since
    {
        return Plan::NotModified;
    }
    let Some(range) = header_str(headers, header::RANGE) else {
        return Plan::Whole;
    };
    if let Some(condition) = headers.get(header::IF_RANGE) {
        let current = match condition.to_str() {
            Ok(tag) if tag.starts_with('"') || tag.starts_with("W/") => {
                etag.is_some_and(|e| !e.starts_with("W/") && e == tag)
            }
            Ok(text) => httpdate::parse_http_date(text).is_ok_and(|d| d == version.modified),
            Err(_) => false,
        };
        if !current {
            return Plan::Whole;
        }
    }
    let ranges = http_range_header::parse_range_header(range)
        .and_then(|parsed| parsed.validate(version.size));
    match ranges {
        Ok(ranges) => match ranges.as_slice() {
            [one] => Plan::Part(one.clone()),
            // Several ranges, or none usable of an empty object: the whole of it.
            _ => Plan::Whole,
        },
        Err(RangeUnsatisfiableError::Invalid(_)) => Plan::Whole,
        Err(_) => Plan::Unsatisfiable,
    }
}

/// `GET` (and `HEAD`, with `body` false) of one object.
pub(crate) async fn read(
    store: &Store,
    path: &Path,
    headers: &HeaderMap,
    body: bool,
) -> Result<Response, StorageError> {
    store.check_inside(path).await?;
    // The object can be replaced between the look at its version and the read: the read asks
    // for the version it planned with, and starts over (twice at most) when that is gone.
    for _ in 0..3 {
        let meta = store.objects.head(path).await?;
        let version = Version::of(&meta);
        let plan = plan(headers, &version);
        let mut response = match &plan {
            Plan::PreconditionFailed => {
                return Err(StorageError::PreconditionFailed);
            }
            Plan::NotModified => StatusCode::NOT_MODIFIED.into_response(),
            Plan::Unsatisfiable => {
                let mut response = platform::error_response(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!(
                        "range not satisfiable: the object has {} bytes",
                        version.size
                    ),
                );
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{}", version.size))
                        .expect("digits are a valid header value"),
                );
                return Ok(response);
            }
            Plan::Whole | Plan::Part(_) => {
                let (status, length, range) = match &plan {
                    Plan::Part(r) => (
                        StatusCode::PARTIAL_CONTENT,
                        r.end() - r.start() + 1,
                        Some(r),
                    ),
                    _ => (StatusCode::OK, version.size, None),
                };
                let payload = if body && length > 0 {
                    let options = GetOptions {
                        if_match: meta.e_tag.clone(),
                        range: range.map(|r| GetRange::Bounded(*r.start()..r.end() + 1)),
                        ..Default::default()
                    };
                    match store.objects.get_opts(path, options).await {
                        Ok(found) => body_of(found),
                        Err(object_store::Error::Precondition { .. })
                        | Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    Body::empty()
                };
                let mut response = Response::new(payload);
                *response.status_mut() = status;
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
                let content_type =
                    mime_guess::from_path(key::display(path)).first_or_octet_stream();
                if let Ok(value) = HeaderValue::from_str(content_type.as_ref()) {
                    headers.insert(header::CONTENT_TYPE, value);
                }
                if let Some(r) = range {
                    let value = format!("bytes {}-{}/{}", r.start(), r.end(), version.size);
                    headers.insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&value).expect("digits are a valid header value"),
                    );
                }
                response
            }
        };
        let headers = response.headers_mut();
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(tag) = version
            .etag
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            headers.insert(header::ETAG, tag);
        }
        headers.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_str(&httpdate::fmt_http_date(version.modified))
                .expect("an HTTP date is a valid header value"),
        );
        return Ok(response);
    }
    Err(StorageError::Busy)
}

/// How much of a local file one read takes. `object_store`'s own stream of a local file reads
/// 8 KiB at a time, each on a blocking thread: 0.5 GB/s here, against 2 GB/s for nginx
/// (docs/benchmarks.md#video); 256 KiB reads keep the thread hand-offs rare and a stream's
/// memory small.
const FILE_READ_BYTES: u64 = 256 * 1024;

/// The body of a read: a local file read in [`FILE_READ_BYTES`] pieces (positioned reads, so
/// no shared file offset), or the store's own stream.
fn body_of(found: object_store::GetResult) -> Body {
    let range = found.range.clone();
    match found.payload {
        GetResultPayload::File(file, _) => {
            let file = std::sync::Arc::new(file);
            Body::from_stream(futures_util::stream::try_unfold(
                (file, range.start),
                move |(file, at)| async move {
                    if at >= range.end {
                        return Ok(None);
                    }
                    let length = FILE_READ_BYTES.min(range.end - at) as usize;
                    let reader = file.clone();
                    // Allocated here, on the runtime's worker, not on the blocking thread: the
                    // allocator then reuses the worker's memory, where each of the many blocking
                    // threads would keep a heap of its own (RSS tripled).
                    let mut buffer = vec![0u8; length];
                    let piece = tokio::task::spawn_blocking(move || {
                        std::os::unix::fs::FileExt::read_exact_at(&*reader, &mut buffer, at)
                            .map(|()| bytes::Bytes::from(buffer))
                    })
                    .await
                    .map_err(std::io::Error::other)??;
                    Ok::<_, std::io::Error>(Some((piece, (file, at + length as u64))))
                },
            ))
        }
        GetResultPayload::Stream(stream) => Body::from_stream(stream.map_err(|e| {
            tracing::warn!(error = %e, "reading a video object failed mid-stream");
            e
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> Version {
        Version {
            etag: Some("\"v1\"".to_string()),
            modified: httpdate::parse_http_date("Mon, 07 Dec 2026 10:00:00 GMT").unwrap(),
            size: 1000,
        }
    }

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let v = version();
        let cases: &[(&str, Plan)] = &[
            ("bytes=0-99", Plan::Part(0..=99)),
            ("bytes=500-", Plan::Part(500..=999)),
            ("bytes=-100", Plan::Part(900..=999)),
            ("bytes=900-5000", Plan::Part(900..=999)),
            ("bytes=-5000", Plan::Part(0..=999)),
            ("bytes=1000-", Plan::Unsatisfiable),
            ("bytes=0-10,5-20", Plan::Whole),
            ("bytes=0-1,10-20", Plan::Whole),
            ("bytes=20-10", Plan::Whole),
            ("bytes=abc", Plan::Whole),
            ("items=0-1", Plan::Whole),
            ("bytes=0-18446744073709551616", Plan::Part(0..=999)),
        ];
        for (range, expected) in cases {
            assert_eq!(&plan(&with(&[("range", range)]), &v), expected, "{range}");
        }
        let many = format!(
            "bytes={}",
            (0..1000)
                .map(|i| format!("{}-{}", i * 2, i * 2))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(plan(&with(&[("range", &many)]), &v), Plan::Unsatisfiable);
    }

    #[test]
    fn conditions_follow_rfc_9110() {
        let v = version();
        let date = "Mon, 07 Dec 2026 10:00:00 GMT";
        let earlier = "Mon, 07 Dec 2026 09:00:00 GMT";
        let cases: &[(&[(&str, &str)], Plan)] = &[
            (&[("if-none-match", "\"v1\"")], Plan::NotModified),
            (&[("if-none-match", "W/\"v1\"")], Plan::NotModified),
            (&[("if-none-match", "\"v0\", \"v1\"")], Plan::NotModified),
            (&[("if-none-match", "*")], Plan::NotModified),
            (&[("if-none-match", "\"v0\"")], Plan::Whole),
            (&[("if-modified-since", date)], Plan::NotModified),
            (&[("if-modified-since", earlier)], Plan::Whole),
            // If-None-Match wins over If-Modified-Since.
            (
                &[("if-none-match", "\"v0\""), ("if-modified-since", date)],
                Plan::Whole,
            ),
            (&[("if-match", "\"v0\"")], Plan::PreconditionFailed),
            (&[("if-match", "W/\"v1\"")], Plan::PreconditionFailed),
            (&[("if-match", "\"v1\"")], Plan::Whole),
            (
                &[("if-unmodified-since", earlier)],
                Plan::PreconditionFailed,
            ),
            (
                &[("if-range", "\"v1\""), ("range", "bytes=0-9")],
                Plan::Part(0..=9),
            ),
            (
                &[("if-range", "\"v0\""), ("range", "bytes=0-9")],
                Plan::Whole,
            ),
            (
                &[("if-range", "W/\"v1\""), ("range", "bytes=0-9")],
                Plan::Whole,
            ),
            (
                &[("if-range", date), ("range", "bytes=0-9")],
                Plan::Part(0..=9),
            ),
            (
                &[("if-range", earlier), ("range", "bytes=0-9")],
                Plan::Whole,
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(&plan(&with(headers), &v), expected, "{headers:?}");
        }
    }

    #[test]
    fn an_empty_object_has_no_ranges() {
        let v = Version {
            size: 0,
            ..version()
        };
        assert_eq!(
            plan(&with(&[("range", "bytes=0-")]), &v),
            Plan::Unsatisfiable
        );
        assert_eq!(plan(&with(&[("range", "bytes=-5")]), &v), Plan::Whole);
    }
}
