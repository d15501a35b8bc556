//! Request and response heads, and the headers that frame a message's body.
//!
//! A request head is parsed into positions in the bytes it came in ([`RequestHead`]), so that a
//! connection reuses one head for all its requests and builds the `http::Request` from shared
//! slices of its buffer. A response head becomes `http::response::Parts` with its framing.

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

/// Most header lines in a head (hyper's limit); more get 431.
pub(crate) const MAX_HEADERS: usize = 100;

/// Longest request target (hyper's limit); longer ones get 414.
pub(crate) const MAX_TARGET_LEN: usize = u16::MAX as usize - 1;

/// Where something is in the bytes a head was parsed from. Heads are far smaller than 4 GiB.
pub(crate) type Span = (u32, u32);

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body.
    None,
    Length(u64),
    Chunked,
}

/// A request head, as positions in the bytes it was parsed from.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// Bytes the head takes, its final empty line included.
    pub(crate) len: usize,
    pub(crate) method: Method,
    pub(crate) target: Span,
    pub(crate) version: Version,
    /// Names and values, in order.
    pub(crate) headers: smallvec::SmallVec<[(Span, Span); 16]>,
    pub(crate) body: BodyFraming,
    /// Whether the connection may carry another request after this one.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1.
    pub(crate) expect_continue: bool,
    /// Whether the request may switch the connection to another protocol: `Upgrade` (HTTP/1.1)
    /// or `CONNECT`.
    pub(crate) upgrade: bool,
}

impl Default for RequestHead {
    fn default() -> Self {
        RequestHead {
            len: 0,
            method: Method::GET,
            target: (0, 0),
            version: Version::HTTP_11,
            headers: smallvec::SmallVec::new(),
            body: BodyFraming::None,
            keep_alive: false,
            expect_continue: false,
            upgrade: false,
        }
    }
}

/// Why a request head is refused; each has its status, as hyper answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    /// Longer than the limit, or more than [`MAX_HEADERS`] lines.
    #[error("request header fields too large")]
    TooLarge,
    #[error("request target too long")]
    TargetTooLong,
    #[error("{0}")]
    Invalid(&'static str),
}

impl HeadError {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::TargetTooLong => StatusCode::URI_TOO_LONG,
            HeadError::Invalid(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Parses the request head at the start of `buf` into `head`: `Ok(true)` when it is complete,
/// `Ok(false)` when more bytes are needed. A head may take at most `max_len` bytes.
pub(crate) fn parse_request(
    buf: &[u8],
    max_len: usize,
    head: &mut RequestHead,
) -> Result<bool, HeadError> {
    // Uninitialised: zeroing room for 100 headers costs more than parsing the usual few.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len > max_len => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_len => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(false),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Invalid("invalid HTTP version")),
        Err(httparse::Error::Token) if request.method.is_none() => {
            return Err(HeadError::Invalid("invalid method"));
        }
        Err(httparse::Error::Token) if request.path.is_none() => {
            return Err(HeadError::Invalid("invalid request target"));
        }
        Err(_) => return Err(HeadError::Invalid("invalid request head")),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(HeadError::Invalid("invalid request head"));
    };
    if target.len() > MAX_TARGET_LEN {
        return Err(HeadError::TargetTooLong);
    }
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Invalid("invalid method"))?;
    let http11 = version == 1;
    let base = buf.as_ptr() as usize;
    let at = |slice: &[u8]| {
        let start = slice.as_ptr() as usize - base;
        (start as u32, (start + slice.len()) as u32)
    };

    let mut keep_alive = http11;
    let mut said_close = false;
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut upgrade = method == Method::CONNECT;
    head.headers.clear();
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = content_length_value(h.value)
                .ok_or(HeadError::Invalid("invalid Content-Length"))?;
            match length {
                Some(earlier) if earlier != value => {
                    return Err(HeadError::Invalid("conflicting Content-Length"));
                }
                // The same length again says nothing new: kept once (as hyper does).
                Some(_) => continue,
                None => length = Some(value),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if !http11 {
                return Err(HeadError::Invalid(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            transfer_encoding = true;
            // The last coding of the last line is the one that frames the body.
            chunked = last_coding_is_chunked(h.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            // Once a line says close, a later keep-alive does not undo it.
            if said_close || has_token(h.value, b"close") {
                said_close = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_token(h.value, b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = http11;
        }
        head.headers.push((at(name), at(h.value)));
    }
    let body = match (transfer_encoding, length) {
        (true, Some(_)) => {
            return Err(HeadError::Invalid(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        (true, None) if !chunked => {
            return Err(HeadError::Invalid(
                "a Transfer-Encoding whose last coding is not chunked",
            ));
        }
        (true, None) => BodyFraming::Chunked,
        (false, Some(0) | None) => BodyFraming::None,
        (false, Some(length)) => BodyFraming::Length(length),
    };
    head.len = len;
    head.method = method;
    head.target = at(target.as_bytes());
    head.version = if http11 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    head.body = body;
    head.keep_alive = keep_alive;
    head.expect_continue = expect_continue && http11;
    head.upgrade = upgrade;
    Ok(true)
}

/// A `Content-Length` line's value: digits only (no sign, no spaces, no list), as hyper reads a
/// request's.
fn content_length_value(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Whether the last coding a `Transfer-Encoding` value lists is `chunked`. A value with bytes
/// outside visible ASCII lists no coding this reads (as hyper has it).
fn last_coding_is_chunked(value: &[u8]) -> bool {
    if !value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return false;
    }
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether a comma-separated header value lists `token` (any case).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseFraming {
    /// After this many bytes (0: no body).
    Length(u64),
    Chunked,
    /// When the server closes the connection.
    Close,
}

/// What the front of a buffer holds, when reading a response.
pub(crate) enum ResponseHead {
    /// A final response: its head (taken off the buffer), how its body is framed, and whether
    /// the connection may be used again after it.
    Complete(http::response::Parts, ResponseFraming, bool),
    /// An interim (1xx) response, taken off the buffer.
    Interim,
    Partial,
}

/// Why a response head is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidResponse(pub(crate) String);

/// Parses a response head from the front of `buf`, taking it off when complete. `head_only`:
/// the request was `HEAD`, so the response has no body whatever it says. A head may take at most
/// `max_len` bytes.
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    head_only: bool,
    max_len: usize,
) -> Result<ResponseHead, InvalidResponse> {
    let invalid = |what: &str| InvalidResponse(what.to_string());
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        &buf[..],
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len > max_len => {
            return Err(invalid("the response head is too large"));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_len => {
            return Err(invalid("the response head is too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(ResponseHead::Partial),
        Err(error) => return Err(InvalidResponse(format!("invalid response head: {error}"))),
    };
    let code = response
        .code
        .expect("a complete response has a status code");
    let status = StatusCode::from_u16(code)
        .map_err(|_| InvalidResponse(format!("invalid status code {code}")))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        buf.advance(len);
        return Ok(ResponseHead::Interim);
    }
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where each name and value sits in the head, to share the head's bytes rather than copy them.
    let base = buf.as_ptr() as usize;
    let mut places = smallvec::SmallVec::<[_; 16]>::new();
    places.extend(response.headers.iter().map(|h| {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        (name..name + h.name.len(), value..value + h.value.len())
    }));
    let head = buf.split_to(len).freeze();
    let bodiless = head_only
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::SWITCHING_PROTOCOLS;
    let mut map = HeaderMap::with_capacity(places.len());
    let (mut says_close, mut says_keep_alive) = (false, false);
    let mut length: Option<u64> = None;
    let (mut transfer_encoding, mut chunked) = (false, false);
    for (name, value) in places {
        let name =
            header_name(&head[name]).map_err(|_| invalid("invalid header name in the response"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| InvalidResponse(format!("invalid value of the response header {name}")))?;
        if name == header::CONTENT_LENGTH && !bodiless {
            // A response may list one length several times (RFC 9110 section 8.6). A response
            // that has no body whatever its headers say (to HEAD, 204, 304) is not framed by
            // it, and its length goes on as it is (as hyper's client does).
            for part in value.as_bytes().split(|&b| b == b',') {
                let part = content_length_value(part.trim_ascii())
                    .ok_or_else(|| invalid("invalid Content-Length in the response"))?;
                if length.is_some_and(|l| l != part) {
                    return Err(invalid("conflicting Content-Lengths in the response"));
                }
                length = Some(part);
            }
        } else if name == header::TRANSFER_ENCODING {
            // HTTP/1.0 has no transfer codings: its framing is faulty (RFC 9112 section 6.1).
            if version == Version::HTTP_10 && !bodiless {
                return Err(invalid("Transfer-Encoding in an HTTP/1.0 response"));
            }
            transfer_encoding = true;
            chunked = last_coding_is_chunked(value.as_bytes());
        } else if name == header::CONNECTION {
            says_close |= has_token(value.as_bytes(), b"close");
            says_keep_alive |= has_token(value.as_bytes(), b"keep-alive");
        }
        map.append(name, value);
    }

    let mut keep_alive = match version {
        Version::HTTP_10 => says_keep_alive && !says_close,
        _ => !says_close,
    };
    let framing = if bodiless {
        keep_alive &= status != StatusCode::SWITCHING_PROTOCOLS;
        ResponseFraming::Length(0)
    } else if transfer_encoding {
        // With both, Transfer-Encoding wins (the length goes: it would misframe the answer to
        // the client), and the connection is not to be trusted again.
        keep_alive &= map.remove(header::CONTENT_LENGTH).is_none();
        if chunked {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::Close
        }
    } else if let Some(length) = length {
        ResponseFraming::Length(length)
    } else {
        ResponseFraming::Close
    };
    if framing == ResponseFraming::Close {
        keep_alive = false;
    }
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = map;
    Ok(ResponseHead::Complete(parts, framing, keep_alive))
}

/// A header name; the request id's is shared rather than allocated for each response (the other
/// common ones are standard names, which never are).
fn header_name(bytes: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    if bytes == b"x-request-id" {
        return Ok(platform::observe::REQUEST_ID);
    }
    HeaderName::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RequestHead, HeadError> {
        let mut head = RequestHead::default();
        match parse_request(text.as_bytes(), 8192, &mut head)? {
            true => Ok(head),
            false => panic!("{text:?} is incomplete"),
        }
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunks_and_never_by_both() {
        assert_eq!(
            parse("GET / HTTP/1.1\r\n\r\n").unwrap().body,
            BodyFraming::None
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .body,
            BodyFraming::None
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nContent-Length: 12\r\ncontent-length: 12\r\n\r\n")
                .unwrap()
                .body,
            BodyFraming::Length(12)
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .unwrap()
                .body,
            BodyFraming::Chunked
        );
        for refused in [
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        ] {
            assert_eq!(
                parse(refused).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{refused:?}"
            );
        }
    }

    #[test]
    fn keep_alive_expect_and_upgrade_follow_the_version() {
        let head = parse("GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n");
        assert!(!head.unwrap().keep_alive, "a close is not undone");
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        let head = parse("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(head.unwrap().expect_continue);
        let head = parse("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!head.unwrap().expect_continue);
        assert!(
            parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .upgrade
        );
        assert!(
            !parse("GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .upgrade
        );
        assert!(parse("CONNECT a:443 HTTP/1.1\r\n\r\n").unwrap().upgrade);
    }

    #[test]
    fn heads_over_the_limits_are_told_apart_from_bad_ones() {
        let mut head = RequestHead::default();
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a", 8192, &mut head),
            Ok(false)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: aaaaaaaa", 16, &mut head),
            Err(HeadError::TooLarge)
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(101));
        assert_eq!(
            parse_request(many.as_bytes(), 8192, &mut head),
            Err(HeadError::TooLarge)
        );
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET_LEN));
        assert_eq!(
            parse_request(long.as_bytes(), 1 << 20, &mut head),
            Err(HeadError::TargetTooLong)
        );
        for bad in [
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(
                parse_request(bad.as_bytes(), 8192, &mut head)
                    .unwrap_err()
                    .status(),
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn response_framing() {
        let framing = |text: &str, head_only: bool| {
            let mut buf = BytesMut::from(text);
            match parse_response(&mut buf, head_only, 65536) {
                Ok(ResponseHead::Complete(_, framing, keep_alive)) => Ok((framing, keep_alive)),
                Ok(_) => panic!("{text:?} is not a final head"),
                Err(error) => Err(error),
            }
        };
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false),
            Ok((ResponseFraming::Length(5), true))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Ok((ResponseFraming::Length(0), true))
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                false
            ),
            Ok((ResponseFraming::Chunked, false))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n", false),
            Ok((ResponseFraming::Close, false))
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            Ok((ResponseFraming::Length(1), false))
        );
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", false).is_err());
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n", false).is_err());
        let mut interim =
            BytesMut::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
        assert!(matches!(
            parse_response(&mut interim, false, 65536),
            Ok(ResponseHead::Interim)
        ));
        assert!(interim.starts_with(b"HTTP/1.1 204"));
    }
}
