//! Routes that serve a directory instead of an upstream (`root = "/srv/assets"`, as nginx's
//! `alias`): the seeds' frontend proxy served the web app's built assets this way.
//!
//! - The request path, after the route's prefix, is percent-decoded and resolved inside the root;
//!   `..`, `.`, encoded slashes and dots, NUL, backslashes, and anything whose real path (symlinks
//!   followed) leaves the root answer 404, as does a directory without `index.html`. No listings.
//! - `GET` and `HEAD` only (others: 405 with `Allow`).
//! - `ETag` (size and modification time, as nginx) and `Last-Modified`; `If-None-Match` and
//!   `If-Modified-Since` give 304.
//! - One `Range` (`bytes=a-b`, `a-`, `-n`) gives 206, an unsatisfiable one 416; `If-Range` with
//!   another validator gives the whole file. Several ranges get the whole file (allowed by RFC 9110).
//! - Precompressed siblings (`app.js.br`, `app.js.gz`) are sent when the client accepts them (not
//!   for ranges), with `Content-Encoding` and `Vary: Accept-Encoding`.
//! - `Content-Type` from the extension (`charset=utf-8` for text).
//! - `Cache-Control: public, max-age=31536000, immutable` for content-hashed names (a part of the
//!   name of 7 or more hex digits: `app.0d97ed6168f4.css`, `_nuxt/4a5b2c7.js`), the route's
//!   `cache_control` otherwise (default `no-cache`: always revalidate, cheap with the ETag).
//! - Files up to 64 KiB are kept in memory, per worker thread, and checked against the disk at
//!   most once a second: a change to such a file is served within a second of it. Larger files
//!   are opened for every request and, on plain HTTP/1 connections, sent with `sendfile(2)`
//!   (`server::zero_copy`): the bytes go from the page cache to the socket without passing
//!   through the gateway. Elsewhere (TLS, HTTP/2, compressed on the fly) they are read in 64 KiB
//!   chunks as the client takes them.

use std::io::{Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

mod cache;
mod conditional;

use crate::server::zero_copy::ZeroCopy;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use cache::{SmallFile, cached, forget, keep};
use conditional::{RangeAnswer, not_modified, parse_range};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const CHUNK: usize = 64 * 1024;

/// Files up to this size are read whole and kept in memory.
const SMALL: u64 = 64 * 1024;
/// How long a file kept in memory is served before the disk is checked again.
const RECHECK: Duration = Duration::from_secs(1);
/// What one worker thread keeps in memory at most; past it, it starts over.
const CACHE_BYTES: usize = 16 << 20;
const CACHE_FILES: usize = 4096;

/// A directory a route serves.
#[derive(Debug)]
pub(crate) struct StaticDir {
    /// Canonical: symlinks resolved, so containment can be checked on real paths.
    root: PathBuf,
    cache_control: HeaderValue,
    /// Tells this directory's files apart from other directories' in the per-thread cache.
    id: u64,
}

/// A static answer: the response, and the file range its body is when it is one (sent by
/// [`Served::into_response`], with zero copy when it may).
pub(crate) struct Served {
    response: Response,
    file: Option<(std::fs::File, u64, u64)>,
}

impl From<Response> for Served {
    fn from(response: Response) -> Self {
        Served {
            response,
            file: None,
        }
    }
}

impl Served {
    /// The status and headers (the body is not there yet).
    pub(crate) fn head(&self) -> (StatusCode, &HeaderMap) {
        (self.response.status(), self.response.headers())
    }

    /// The response; a file range goes with `sendfile(2)` when `zero_copy` is given, which the
    /// caller may only do when nothing will read or change the body on its way to the client.
    pub(crate) fn into_response(self, zero_copy: Option<ZeroCopy>) -> Response {
        let Some((mut file, start, count)) = self.file else {
            return self.response;
        };
        let body = match zero_copy {
            Some(offer) => Body::new(offer.body(file, start, count)),
            None => {
                // lseek does no I/O; it cannot block.
                if start > 0 && file.seek(SeekFrom::Start(start)).is_err() {
                    return not_found();
                }
                let handle = tokio::fs::File::from_std(file).take(count);
                Body::from_stream(ReaderStream::with_capacity(handle, CHUNK))
            }
        };
        self.response.map(|_| body)
    }
}

impl StaticDir {
    /// Opens `root` (it must be a directory); errors are worded for a config message.
    pub(crate) fn open(root: &str, cache_control: &str) -> Result<Self, String> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let real = std::fs::canonicalize(root).map_err(|e| format!("{root}: {e}"))?;
        if !real.is_dir() {
            return Err(format!("{root} is not a directory"));
        }
        let cache_control = HeaderValue::from_str(cache_control)
            .map_err(|_| format!("cache_control {cache_control:?} is not a header value"))?;
        Ok(StaticDir {
            root: real,
            cache_control,
            id: IDS.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Answers a request for `path` (the part after the route's prefix, still percent-encoded).
    pub(crate) async fn serve(&self, method: &Method, path: &str, headers: &HeaderMap) -> Served {
        if method != Method::GET && method != Method::HEAD {
            let mut response = platform::error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed here; files answer GET and HEAD"),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response.into();
        }
        // Which precompressed siblings may be sent: none for a range.
        let siblings = if headers.contains_key(header::RANGE) {
            Siblings::NONE
        } else {
            Siblings {
                br: accepts(headers, "br"),
                gzip: accepts(headers, "gzip"),
            }
        };
        if let Some(file) = cached(self.id, siblings, path) {
            return self.answer(
                method,
                headers,
                &file.meta,
                Content::Bytes(file.bytes.clone()),
            );
        }
        let root = self.root.clone();
        let owned_path = path.to_string();
        let cache_control = self.cache_control.clone();
        // One trip to the blocking pool: resolve, choose, open, and read a small file whole.
        let opened = tokio::task::spawn_blocking(move || {
            let file = resolve(&root, &owned_path)?;
            open(&file, siblings, cache_control)
                .map_err(|error| {
                    tracing::warn!(path = %file.display(), %error, "cannot read a static file");
                })
                .ok()
        })
        .await
        .ok()
        .flatten();
        match opened {
            Some((meta, Content::Bytes(bytes))) => {
                let file = Arc::new(SmallFile { meta, bytes });
                keep(self.id, siblings, path, Arc::clone(&file));
                self.answer(
                    method,
                    headers,
                    &file.meta,
                    Content::Bytes(file.bytes.clone()),
                )
            }
            Some((meta, content)) => {
                forget(self.id, siblings, path);
                self.answer(method, headers, &meta, content)
            }
            None => {
                forget(self.id, siblings, path);
                not_found().into()
            }
        }
    }

    fn answer(
        &self,
        method: &Method,
        headers: &HeaderMap,
        meta: &Meta,
        content: Content,
    ) -> Served {
        let Meta {
            len,
            modified,
            etag,
            last_modified,
            headers: common,
        } = meta;
        let len = *len;
        let mut out = common.clone();

        if not_modified(headers, etag.to_str().unwrap_or(""), *modified) {
            return respond(StatusCode::NOT_MODIFIED, out, Body::empty()).into();
        }

        let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
        let if_range_ok = !headers
            .get(header::IF_RANGE)
            .is_some_and(|v| v != etag && v != last_modified);
        let (status, start, count) =
            match range.filter(|_| if_range_ok).map(|r| parse_range(r, len)) {
                None | Some(RangeAnswer::Whole) => (StatusCode::OK, 0, len),
                Some(RangeAnswer::Part(start, end)) => {
                    out.insert(
                        header::CONTENT_RANGE,
                        header_value(&format!("bytes {start}-{end}/{len}")),
                    );
                    (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
                }
                Some(RangeAnswer::Unsatisfiable) => {
                    out.insert(
                        header::CONTENT_RANGE,
                        header_value(&format!("bytes */{len}")),
                    );
                    return respond(StatusCode::RANGE_NOT_SATISFIABLE, out, Body::empty()).into();
                }
            };
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
        if method == Method::HEAD {
            return respond(status, out, Body::empty()).into();
        }
        match content {
            Content::Bytes(bytes) => {
                let part = bytes.slice(start as usize..(start + count) as usize);
                respond(status, out, Body::from(part)).into()
            }
            Content::File(file) => Served {
                response: respond(status, out, Body::empty()),
                file: Some((file, start, count)),
            },
        }
    }
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The precompressed siblings a request accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Siblings {
    br: bool,
    gzip: bool,
}

impl Siblings {
    const NONE: Siblings = Siblings {
        br: false,
        gzip: false,
    };
}

/// What the answer for a file says about it.
struct Meta {
    len: u64,
    modified: SystemTime,
    etag: HeaderValue,
    last_modified: HeaderValue,
    /// The headers of every answer with the file: validators, type, caching, encoding.
    headers: HeaderMap,
}

enum Content {
    /// The whole file, read.
    Bytes(Bytes),
    /// The file, open.
    File(std::fs::File),
}

/// The real path of the file `path` (percent-encoded, relative) names, if it exists inside
/// `root`.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    let mut candidate = root.to_path_buf();
    for part in decoded.split('/') {
        if part.is_empty() {
            continue;
        }
        if part.contains('\\') || part.contains('\0') {
            return None;
        }
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(name)), None) => candidate.push(name),
            _ => return None,
        }
    }
    let mut real = std::fs::canonicalize(&candidate).ok()?;
    if !real.starts_with(root) {
        return None;
    }
    if std::fs::metadata(&real).ok()?.is_dir() {
        real = std::fs::canonicalize(real.join("index.html")).ok()?;
        if !real.starts_with(root) {
            return None;
        }
    }
    Some(real)
}

/// Opens `file`, or its first precompressed sibling the request accepts (`.br`, `.gz`) that
/// exists; reads it whole when it is small.
fn open(
    file: &Path,
    siblings: Siblings,
    cache_control: HeaderValue,
) -> std::io::Result<(Meta, Content)> {
    use std::io::Read;
    let wanted = [(siblings.br, "br", "br"), (siblings.gzip, "gz", "gzip")];
    let mut chosen = (file.to_path_buf(), None);
    for (_, suffix, encoding) in wanted.into_iter().filter(|(accepted, ..)| *accepted) {
        let mut name = file.as_os_str().to_owned();
        name.push(".");
        name.push(suffix);
        let sibling = PathBuf::from(name);
        if std::fs::metadata(&sibling).is_ok_and(|m| m.is_file()) {
            chosen = (sibling, Some(encoding));
            break;
        }
    }
    let (path, encoding) = chosen;
    let mut handle = std::fs::File::open(&path)?;
    let stat = handle.metadata()?;
    if !stat.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a file",
        ));
    }
    let len = stat.len();
    let modified = stat.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let secs = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let etag = match encoding {
        Some(encoding) => format!("\"{secs:x}-{len:x}-{encoding}\""),
        None => format!("\"{secs:x}-{len:x}\""),
    };
    let (etag, last_modified) = (
        header_value(&etag),
        header_value(&httpdate::fmt_http_date(modified)),
    );
    let mut headers = HeaderMap::with_capacity(10);
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::LAST_MODIFIED, last_modified.clone());
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let cache_control = if content_hashed(name) {
        HeaderValue::from_static(IMMUTABLE)
    } else {
        cache_control
    };
    headers.insert(header::CACHE_CONTROL, cache_control);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(header::CONTENT_TYPE, content_type(file));
    if let Some(encoding) = encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    let meta = Meta {
        len,
        modified,
        etag,
        last_modified,
        headers,
    };
    if len > SMALL {
        return Ok((meta, Content::File(handle)));
    }
    let mut buffer = Vec::with_capacity(len as usize);
    handle.read_to_end(&mut buffer)?;
    if buffer.len() as u64 != len {
        return Err(std::io::Error::other("the file changed while it was read"));
    }
    Ok((meta, Content::Bytes(Bytes::from(buffer))))
}

fn not_found() -> Response {
    platform::error_response(StatusCode::NOT_FOUND, "no such file")
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `%xx` decoded; `None` for a malformed escape or text that is not UTF-8. An encoded `/` is
/// refused rather than taken as a separator or a name character.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            let byte = u8::from_str_radix(hex, 16).ok()?;
            if byte == b'/' {
                return None;
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A part of the name, between `.`, `-` or `_`, of 7 to 64 hex digits.
fn content_hashed(name: &str) -> bool {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    stem.split(['.', '-', '_'])
        .any(|part| (7..=64).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn content_type(file: &Path) -> HeaderValue {
    let mime = mime_guess::from_path(file).first_or_octet_stream();
    let text = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.subtype().as_str(),
            "javascript" | "json" | "xml" | "svg"
        );
    if text && mime.get_param("charset").is_none() {
        header_value(&format!("{mime}; charset=utf-8"))
    } else {
        header_value(mime.as_ref())
    }
}

fn accepts(headers: &HeaderMap, encoding: &str) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            name.eq_ignore_ascii_case(encoding) && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        use RangeAnswer::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Part(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), Part(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Part(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Part(0, 999));
        assert_eq!(parse_range("bytes=990-5000", 1000), Part(990, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Whole);
        assert_eq!(parse_range("lines=1-2", 1000), Whole);
        assert_eq!(parse_range("bytes=x-y", 1000), Whole);
    }

    #[test]
    fn hashed_names_and_paths_that_must_not_resolve() {
        assert!(content_hashed("app.0d97ed6168f4.css"));
        assert!(content_hashed("4a5b2c7.js"));
        assert!(content_hashed("chunk-1a2b3c4d.js"));
        assert!(!content_hashed("index.html"));
        assert!(!content_hashed("favicon.ico"));
        assert_eq!(percent_decode("/a%20b.txt").as_deref(), Some("/a b.txt"));
        assert_eq!(
            percent_decode("/%2e%2e/etc/passwd").as_deref(),
            Some("/../etc/passwd")
        );
        assert_eq!(percent_decode("/a%2fb"), None);
        assert_eq!(percent_decode("/a%zz"), None);
        assert_eq!(percent_decode("/a%"), None);
    }
}
