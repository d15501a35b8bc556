//! Response compression for routes with `compress = true` (and the env mode's `GZIP=on`): brotli,
//! zstd or gzip, whichever the client's `Accept-Encoding` prefers (at equal preference in that
//! order), streamed as the upstream sends.
//!
//! Only responses worth it are compressed: a 200-class answer other than 204 and 206, not already
//! encoded, not a range, of a compressible type (text, JSON, JavaScript, XML, SVG, WebAssembly),
//! at least [`MIN_LENGTH`] bytes when its length is known, and without `Cache-Control:
//! no-transform`. Never for `HEAD`. A compressed answer loses its `Content-Length`, gets
//! `Content-Encoding`, `Vary: Accept-Encoding`, and a weak `ETag` (as nginx does). Every
//! response of a compressing route, compressed or not, varies by `Accept-Encoding`.

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use axum::body::Body;
use axum::response::Response;
use futures_util::TryStreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use tokio_util::io::{ReaderStream, StreamReader};

/// Smaller bodies are sent as they are: the framing would eat the gain.
pub(crate) const MIN_LENGTH: u64 = 256;

/// Fast enough for every response, most of the gain of higher levels (for all three codecs).
const LEVEL: i32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Brotli,
    Zstd,
    Gzip,
}

impl Encoding {
    fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }
}

/// The encoding to use for a request, from its method and `Accept-Encoding`; `None` when the
/// client accepts none of ours (or it is a `HEAD`).
pub(crate) fn negotiate(method: &Method, headers: &HeaderMap) -> Option<Encoding> {
    if method == Method::HEAD {
        return None;
    }
    let mut best: Option<(Encoding, u32)> = None;
    let mut wildcard: Option<u32> = None;
    let mut refused: Vec<Encoding> = Vec::new();
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(parse_q)
                .unwrap_or(1000);
            let encoding = match name.as_str() {
                "br" => Encoding::Brotli,
                "zstd" => Encoding::Zstd,
                "gzip" | "x-gzip" => Encoding::Gzip,
                "*" => {
                    wildcard = Some(q);
                    continue;
                }
                _ => continue,
            };
            if q == 0 {
                refused.push(encoding);
            } else if best.is_none_or(|(b, bq)| q > bq || (q == bq && rank(encoding) < rank(b))) {
                best = Some((encoding, q));
            }
        }
    }
    match (best, wildcard) {
        (Some((encoding, _)), _) => Some(encoding),
        (None, Some(q)) if q > 0 => [Encoding::Brotli, Encoding::Zstd, Encoding::Gzip]
            .into_iter()
            .find(|e| !refused.contains(e)),
        _ => None,
    }
}

fn rank(encoding: Encoding) -> u8 {
    encoding as u8
}

/// A q-value in thousandths; `None` when malformed.
fn parse_q(text: &str) -> Option<u32> {
    let q: f32 = text.trim().parse().ok()?;
    (0.0..=1.0)
        .contains(&q)
        .then(|| (q * 1000.0).round() as u32)
}

/// Compresses `response` with `encoding` when it is worth it (see the module docs).
pub(crate) fn apply(mut response: Response, encoding: Option<Encoding>) -> Response {
    let headers = response.headers_mut();
    append_vary(headers);
    let Some(encoding) =
        encoding.filter(|_| worth_compressing(response.status(), response.headers()))
    else {
        return response;
    };
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.token()),
    );
    if let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok())
        && !etag.starts_with("W/")
        && let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}"))
    {
        headers.insert(header::ETAG, weak);
    }
    response.map(|body| {
        let reader = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
        let level = Level::Precise(LEVEL);
        match encoding {
            Encoding::Brotli => Body::from_stream(ReaderStream::new(BrotliEncoder::with_quality(
                reader, level,
            ))),
            Encoding::Zstd => {
                Body::from_stream(ReaderStream::new(ZstdEncoder::with_quality(reader, level)))
            }
            Encoding::Gzip => {
                Body::from_stream(ReaderStream::new(GzipEncoder::with_quality(reader, level)))
            }
        }
    })
}

/// Whether [`apply`] with `encoding` compresses an answer with this status and these headers.
pub(crate) fn compresses(
    encoding: Option<Encoding>,
    status: StatusCode,
    headers: &HeaderMap,
) -> bool {
    encoding.is_some() && worth_compressing(status, headers)
}

fn append_vary(headers: &mut HeaderMap) {
    let already = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !already {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

fn worth_compressing(status: StatusCode, headers: &HeaderMap) -> bool {
    if !status.is_success()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || headers.contains_key(header::CONTENT_ENCODING)
        || headers.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    let no_transform = headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform"))
    });
    if no_transform {
        return false;
    }
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len < MIN_LENGTH);
    if small {
        return false;
    }
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(compressible_type)
}

/// Text-like types; images, video, archives and fonts other than SVG are compressed already.
fn compressible_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/") && essence != "text/event-stream"
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/wasm"
                | "application/manifest+json"
                | "image/svg+xml"
        )
        || essence.starts_with("application/")
            && (essence.ends_with("+json") || essence.ends_with("+xml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Option<Encoding> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        negotiate(&Method::GET, &headers)
    }

    #[test]
    fn accept_encoding_picks_by_q_then_by_our_preference() {
        assert_eq!(accept("gzip, deflate, br, zstd"), Some(Encoding::Brotli));
        assert_eq!(accept("gzip"), Some(Encoding::Gzip));
        assert_eq!(accept("br;q=0.5, gzip;q=0.9"), Some(Encoding::Gzip));
        assert_eq!(accept("zstd, gzip;q=0.5"), Some(Encoding::Zstd));
        assert_eq!(accept("identity"), None);
        assert_eq!(accept("gzip;q=0"), None);
        assert_eq!(accept("*"), Some(Encoding::Brotli));
        assert_eq!(accept("br;q=0, *;q=0.1"), Some(Encoding::Zstd));
        assert_eq!(accept("gzip;q=nonsense"), Some(Encoding::Gzip));
        assert_eq!(negotiate(&Method::GET, &HeaderMap::new()), None);
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(negotiate(&Method::HEAD, &headers), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn only_sizeable_compressible_whole_answers_are_compressed() {
        let ok = StatusCode::OK;
        let html = [("content-type", "text/html; charset=utf-8")];
        assert!(worth_compressing(ok, &headers(&html)));
        assert!(worth_compressing(
            ok,
            &headers(&[("content-type", "application/problem+json")])
        ));
        assert!(!worth_compressing(
            ok,
            &headers(&[("content-type", "image/png")])
        ));
        assert!(!worth_compressing(
            ok,
            &headers(&[("content-type", "text/event-stream")])
        ));
        assert!(!worth_compressing(ok, &headers(&[])));
        assert!(!worth_compressing(
            ok,
            &headers(&[("content-type", "text/plain"), ("content-length", "100")])
        ));
        assert!(!worth_compressing(
            ok,
            &headers(&[("content-type", "text/plain"), ("content-encoding", "gzip")])
        ));
        assert!(!worth_compressing(
            StatusCode::PARTIAL_CONTENT,
            &headers(&html)
        ));
        assert!(!worth_compressing(
            StatusCode::NOT_MODIFIED,
            &headers(&html)
        ));
        assert!(!worth_compressing(
            ok,
            &headers(&[
                ("content-type", "text/plain"),
                ("cache-control", "public, no-transform")
            ])
        ));
    }
}
