//! A lean HTTP/1.1 connection loop for the requests most connections carry: a head and no body.
//!
//! hyper serves every HTTP feature, and pays for that generality on every request: a dispatcher
//! state machine, the glue between its service trait and tower's, a boxed timer, and (with
//! [`crate::framing`] in front of it) each head parsed twice. On a small proxied request that
//! is most of a gateway's own work, and its code alone overflows the CPU's instruction cache.
//! This loop takes the plain case: it parses each head once (httparse, with hyper's limits),
//! hands the service a request with an empty body, and writes the response with one vectored
//! write per body frame, its head riding with the first one.
//!
//! The first request it does not take — one with a body (`Content-Length` other than 0, or
//! `Transfer-Encoding`), `Upgrade`, `CONNECT` or `Expect`, a head that is malformed or larger
//! than the limit, or HTTP/2's preface — ends the loop: the connection, with every byte read and
//! not yet served, goes to hyper (behind the framing guard), which serves the rest of it as it
//! serves every other connection. So everything beyond the plain case keeps hyper's behaviour,
//! answers included.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ConnectInfo;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::contract::LeanService;
use crate::zero_copy::ZeroCopy;

/// hyper's limit on the number of header lines.
const MAX_HEADERS: usize = 100;

/// How the loop ended.
pub(crate) enum Ended {
    /// The connection is done: closed by the client, timed out, or drained.
    Closed,
    /// A request the loop does not take: hyper serves the connection from these bytes on.
    HandOver(BytesMut),
}

/// What the loop needs to know of the server's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A request head must arrive within this time of the loop starting to wait for it.
    pub(crate) header_read_timeout: Duration,
    /// Heads that do not fit go to hyper, which answers 431.
    pub(crate) max_header_size: usize,
}

/// Where something is in the bytes a head was parsed from.
type Span = (u32, u32);

/// A request head the loop takes, as positions in the bytes it was parsed from. One per
/// connection, filled anew for each request.
struct Head {
    len: usize,
    method: Method,
    path: Span,
    version: Version,
    headers: smallvec::SmallVec<[(Span, Span); 16]>,
    keep_alive: bool,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            len: 0,
            method: Method::GET,
            path: (0, 0),
            version: Version::HTTP_11,
            headers: smallvec::SmallVec::new(),
            keep_alive: false,
        }
    }
}

/// What the buffer holds.
enum Parsed {
    /// A head the loop takes, now in the `Head` given to [`parse`].
    Complete,
    Partial,
    /// Not a request this loop takes.
    Other,
}

/// Serves plain requests on `io` until the connection ends or a request needs hyper.
pub(crate) async fn serve<T, S>(
    io: &mut T,
    peer: SocketAddr,
    offer: Option<&ZeroCopy>,
    mut service: S,
    limits: Limits,
    draining: &watch::Receiver<bool>,
) -> io::Result<Ended>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: LeanService,
    <S::Body as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(512);
    // Both made once for the connection: on a keep-alive connection the loop waits for a head
    // once per request, and registering a timer and a drain listener each time would cost more
    // than parsing the head.
    let mut drain = pin!({
        let mut draining = draining.clone();
        async move {
            // Also when the server is gone.
            let _ = draining.wait_for(|d| *d).await;
        }
    });
    let mut deadline = crate::coarse_timer::CoarseSleep::after(limits.header_read_timeout);
    let mut head = Head::default();
    loop {
        // The whole head must arrive within the timeout, however it is split.
        let mut armed = false;
        loop {
            match parse(&buf, limits.max_header_size, &mut head) {
                Parsed::Complete => break,
                Parsed::Other => return Ok(Ended::HandOver(buf)),
                Parsed::Partial => {}
            }
            if !armed {
                deadline.reset_after(limits.header_read_timeout);
                armed = true;
            }
            buf.reserve(4096);
            let read = tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => read?,
                () = &mut deadline => return Ok(Ended::Closed),
                // An idle connection closes when draining starts; one mid-head gets its answer
                // first.
                () = &mut drain, if buf.is_empty() => return Ok(Ended::Closed),
            };
            if read == 0 {
                // The client closed (mid-head or between requests): nothing to answer.
                return Ok(Ended::Closed);
            }
        }
        let bytes = buf.split_to(head.len).freeze();
        let Some(request) = request(&bytes, &head, peer, offer) else {
            // Names and values httparse took but the http crate does not: rare enough to let
            // hyper give its answer.
            let mut all = BytesMut::from(&bytes[..]);
            all.extend_from_slice(&buf);
            return Ok(Ended::HandOver(all));
        };
        let head_request = head.method == Method::HEAD;
        // Requests on one connection come one at a time: the connection's own service takes
        // them all, where a clone per request would touch a reference count the other workers
        // share, and its future is awaited here rather than boxed.
        let response = service.call_lean(request).await;
        // A version check, not `borrow()`: that takes the channel's lock, which every worker's
        // connections share. Also draining when the server is gone.
        let keep_alive = head.keep_alive && matches!(draining.has_changed(), Ok(false));
        if !respond(
            io,
            &mut out,
            response,
            head.version,
            head_request,
            keep_alive,
        )
        .await?
        {
            return Ok(Ended::Closed);
        }
    }
}

/// Parses the head at the start of `buf` into `head`, deciding whether the loop takes it.
fn parse(buf: &[u8], max_header_size: usize, head: &mut Head) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len <= max_header_size => len,
        Ok(httparse::Status::Partial) if buf.len() < max_header_size => return Parsed::Partial,
        _ => return Parsed::Other,
    };
    let (Some(method), Some(path), Some(version)) = (request.method, request.path, request.version)
    else {
        return Parsed::Other;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    if method == Method::CONNECT {
        return Parsed::Other;
    }
    let version = if version == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let base = buf.as_ptr() as usize;
    // Within `max_header_size`, which is far below 4 GiB.
    let at = |slice: &[u8]| {
        let start = slice.as_ptr() as usize - base;
        (start as u32, (start + slice.len()) as u32)
    };
    let mut keep_alive = version == Version::HTTP_11;
    head.headers.clear();
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            // No body is the only length taken; hyper checks and frames every other.
            if h.value != b"0" {
                return Parsed::Other;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parsed::Other;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive |= version == Version::HTTP_10;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        }
        head.headers.push((at(name), at(h.value)));
    }
    head.len = len;
    head.method = method;
    head.path = at(path.as_bytes());
    head.version = version;
    head.keep_alive = keep_alive;
    Parsed::Complete
}

/// The request `head` describes, its header values sharing `bytes`.
fn request(
    bytes: &Bytes,
    head: &Head,
    peer: SocketAddr,
    offer: Option<&ZeroCopy>,
) -> Option<Request<axum::body::Body>> {
    let slice = |(start, end): Span| bytes.slice(start as usize..end as usize);
    let uri = Uri::from_maybe_shared(slice(head.path)).ok()?;
    // Room for the request id, which the contract's layers add when the client sent none. More
    // would cost: past 1 KiB the entries take the allocator's slower path.
    let mut headers = HeaderMap::with_capacity(head.headers.len() + 1);
    for &(name, value) in &head.headers {
        let name = HeaderName::from_bytes(&bytes[name.0 as usize..name.1 as usize]).ok()?;
        // httparse has checked the value's bytes, as it does for hyper.
        let value = HeaderValue::from_maybe_shared(slice(value)).ok()?;
        headers.append(name, value);
    }
    let mut request = Request::new(axum::body::Body::empty());
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = headers;
    let extensions = request.extensions_mut();
    extensions.insert(ConnectInfo(peer));
    if let Some(offer) = offer {
        extensions.insert(offer.clone());
    }
    Some(request)
}

/// Writes `response`. `Ok(true)` when the connection can take another request.
async fn respond<T, B>(
    io: &mut T,
    out: &mut Vec<u8>,
    response: Response<B>,
    version: Version,
    head_request: bool,
    mut keep_alive: bool,
) -> io::Result<bool>
where
    T: AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let bodiless =
        head_request || status.is_informational() || matches!(status.as_u16(), 204 | 304);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut length: Option<u64> = None;
    let mut dated = false;
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            // Framing is this connection's business.
            continue;
        }
        if name == header::CONTENT_LENGTH {
            // The first valid one counts; a second is not repeated.
            if length.is_some() {
                continue;
            }
            match value.to_str().ok().and_then(|v| v.parse().ok()) {
                Some(declared) => length = Some(declared),
                None => continue,
            }
        } else if name == header::CONNECTION {
            if has_token(value.as_bytes(), b"close") {
                keep_alive = false;
            }
            continue;
        } else if name == header::DATE {
            dated = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let declared = length;
    let length = declared.or(body.size_hint().exact());
    let chunked = !bodiless && length.is_none() && version == Version::HTTP_11;
    if !bodiless || head_request {
        match (declared, length) {
            // The handler's own.
            (Some(_), _) => {}
            (None, Some(length)) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            (None, None) if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            // HTTP/1.0 without a length: the end of the connection ends the body.
            (None, None) if !head_request => keep_alive = false,
            (None, None) => {}
        }
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    match (keep_alive, version) {
        (false, _) => out.extend_from_slice(b"connection: close\r\n"),
        (true, Version::HTTP_10) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (true, _) => {}
    }
    out.extend_from_slice(b"\r\n");

    let mut body = pin!(body);
    if bodiless {
        write_all(io, &mut [IoSlice::new(out)]).await?;
        return Ok(keep_alive);
    }
    let mut left = length;
    let mut head_sent = false;
    loop {
        // The head goes out with the first frame when that is at hand, alone when it is not.
        let at_hand =
            match std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(frame) => Some(data_of(frame)),
                Poll::Pending => None,
            };
        let next = match at_hand {
            Some(next) => next,
            None => {
                if !head_sent {
                    write_all(io, &mut [IoSlice::new(out)]).await?;
                    head_sent = true;
                }
                data_of(std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await)
            }
        };
        let data = match next {
            Next::End => break,
            Next::Skip => continue,
            Next::Failed => return Ok(false),
            Next::Data(data) => data,
        };
        if let Some(left) = &mut left {
            match left.checked_sub(data.len() as u64) {
                Some(rest) => *left = rest,
                None => {
                    tracing::debug!("response body longer than its length; closing");
                    return Ok(false);
                }
            }
        }
        let mut size_line = [0u8; 18];
        let (size_line, crlf): (&[u8], &[u8]) = if chunked {
            (chunk_size_line(data.len(), &mut size_line), b"\r\n")
        } else {
            (b"", b"")
        };
        let head: &[u8] = if head_sent { b"" } else { out };
        head_sent = true;
        // The data is written as it is, never copied: a zero-copy placeholder must reach the
        // socket unchanged (see `zero_copy`).
        write_all(
            io,
            &mut [
                IoSlice::new(head),
                IoSlice::new(size_line),
                IoSlice::new(&data),
                IoSlice::new(crlf),
            ],
        )
        .await?;
    }
    let head: &[u8] = if head_sent { b"" } else { out };
    let last: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
    if !head.is_empty() || !last.is_empty() {
        write_all(io, &mut [IoSlice::new(head), IoSlice::new(last)]).await?;
    }
    if left.is_some_and(|left| left > 0) {
        tracing::debug!("response body shorter than its length; closing");
        return Ok(false);
    }
    Ok(keep_alive)
}

/// What a body frame means for the writer.
enum Next {
    Data(Bytes),
    /// An empty frame, or trailers: nothing to send.
    Skip,
    End,
    Failed,
}

fn data_of<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    frame: Option<Result<http_body::Frame<Bytes>, E>>,
) -> Next {
    match frame {
        None => Next::End,
        Some(Err(error)) => {
            let error: Box<dyn std::error::Error + Send + Sync> = error.into();
            tracing::debug!(%error, "response body failed; closing the connection");
            Next::Failed
        }
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) if !data.is_empty() => Next::Data(data),
            _ => Next::Skip,
        },
    }
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A chunk's size line, `{size in hex}\r\n`, written into `buf`.
pub fn chunk_size_line(size: usize, buf: &mut [u8; 18]) -> &[u8] {
    let len = format_hex(size, &mut buf[..16]);
    buf[len] = b'\r';
    buf[len + 1] = b'\n';
    &buf[..len + 2]
}

/// Writes `value` in hex at the start of `buf`: how many digits.
fn format_hex(value: usize, buf: &mut [u8]) -> usize {
    let digits = (usize::BITS - value.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, digit) in buf[..digits].iter_mut().enumerate() {
        let nibble = (value >> ((digits - 1 - i) * 4)) & 0xf;
        *digit = b"0123456789abcdef"[nibble];
    }
    digits
}

/// Writes all of `slices`.
async fn write_all<T: AsyncWrite + Unpin>(
    io: &mut T,
    slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    let mut slices = &mut slices[..];
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let written = io.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// The current time as an HTTP date (on the coarse clock, as nginx's is on its cached time),
/// made once a second per thread.
fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    DATE.with_borrow_mut(|(second, text)| {
        let this_second = crate::coarse_timer::unix_seconds();
        if *second != this_second {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(this_second);
            let formatted = httpdate::fmt_http_date(at);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *second = this_second;
            }
        }
        f(&text[..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A service answering `/` with "hi", `/stream` with a body of unknown length, `/close` with
    /// `Connection: close`.
    fn app() -> axum::Router {
        use axum::routing::get;
        axum::Router::new()
            .route("/", get(|| async { "hi" }))
            .route(
                "/stream",
                get(|| async {
                    let parts = futures_util::stream::iter(
                        ["one", "two"].map(|p| Ok::<_, std::io::Error>(Bytes::from(p))),
                    );
                    axum::body::Body::from_stream(parts)
                }),
            )
            .route(
                "/close",
                get(|| async { ([(header::CONNECTION, "close")], "bye") }),
            )
    }

    const LIMITS: Limits = Limits {
        header_read_timeout: Duration::from_secs(5),
        max_header_size: 8192,
    };

    /// Runs the loop on one end of a pipe; the test talks on the other.
    fn start(
        draining: watch::Receiver<bool>,
    ) -> (DuplexStream, tokio::task::JoinHandle<io::Result<Ended>>) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let task =
            tokio::spawn(
                async move { serve(&mut server, peer, None, app(), LIMITS, &draining).await },
            );
        (client, task)
    }

    async fn read_until_closed(client: &mut DuplexStream) -> String {
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        String::from_utf8(all).unwrap()
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_and_http10_closes() {
        let (_drain, draining) = watch::channel(false);
        let (mut client, task) = start(draining);
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\n\
                  GET /stream HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.0\r\n\r\n",
            )
            .await
            .unwrap();
        let all = read_until_closed(&mut client).await;
        let answers: Vec<&str> = all.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(answers.len(), 4, "{all}");
        assert!(answers[0].starts_with("200 OK\r\n"), "{all}");
        assert!(answers[0].contains("content-length: 2\r\n"), "{all}");
        assert!(answers[0].ends_with("\r\n\r\nhi"), "{all}");
        // HEAD: the length of what GET would send, and no body.
        assert!(answers[1].contains("content-length: 2\r\n"), "{all}");
        assert!(answers[1].ends_with("\r\n\r\n"), "{all}");
        // Unknown length: chunked.
        assert!(
            answers[2].contains("transfer-encoding: chunked\r\n"),
            "{all}"
        );
        assert!(
            answers[2].ends_with("\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"),
            "{all}"
        );
        // HTTP/1.0 without keep-alive: answered, then closed.
        assert!(answers[3].contains("connection: close\r\n"), "{all}");
        assert!(answers[3].ends_with("hi"), "{all}");
        assert!(matches!(task.await.unwrap(), Ok(Ended::Closed)));
    }

    #[tokio::test]
    async fn a_handler_that_says_close_closes() {
        let (_drain, draining) = watch::channel(false);
        let (mut client, task) = start(draining);
        client
            .write_all(b"GET /close HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let all = read_until_closed(&mut client).await;
        assert_eq!(all.matches("HTTP/1.1 ").count(), 1, "{all}");
        assert!(
            all.contains("connection: close\r\n") && all.ends_with("bye"),
            "{all}"
        );
        assert!(matches!(task.await.unwrap(), Ok(Ended::Closed)));
    }

    #[tokio::test]
    async fn a_request_with_a_body_hands_the_rest_of_the_connection_over() {
        let (_drain, draining) = watch::channel(false);
        let (mut client, task) = start(draining);
        let rest =
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
        client
            .write_all(format!("GET / HTTP/1.1\r\nHost: a\r\n\r\n{rest}").as_bytes())
            .await
            .unwrap();
        let mut first = [0u8; 1024];
        let n = client.read(&mut first).await.unwrap();
        assert!(std::str::from_utf8(&first[..n]).unwrap().ends_with("hi"));
        match task.await.unwrap() {
            Ok(Ended::HandOver(bytes)) => assert_eq!(&bytes[..], rest.as_bytes()),
            _ => panic!("the POST goes to hyper"),
        }
    }

    #[tokio::test]
    async fn draining_closes_an_idle_connection() {
        let (drain, draining) = watch::channel(false);
        let (mut client, task) = start(draining);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 1024];
        let n = client.read(&mut first).await.unwrap();
        assert!(std::str::from_utf8(&first[..n]).unwrap().ends_with("hi"));
        drain.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("an idle connection closes when draining starts");
        assert!(matches!(ended.unwrap(), Ok(Ended::Closed)));
    }

    #[test]
    fn hex_sizes() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_size_line(0, &mut buf), b"0\r\n");
        assert_eq!(chunk_size_line(255, &mut buf), b"ff\r\n");
        assert_eq!(chunk_size_line(4096, &mut buf), b"1000\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut buf),
            b"ffffffffffffffff\r\n"
        );
    }

    #[test]
    fn plain_heads_are_taken_and_others_handed_over() {
        let parsed = |head: &str, max| parse(head.as_bytes(), max, &mut Head::default());
        let taken = |head: &str| matches!(parsed(head, 8192), Parsed::Complete);
        assert!(taken("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(taken("DELETE /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
        assert!(taken("GET / HTTP/1.0\r\n\r\n"));
        for other in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert!(
                matches!(parsed(other, 8192), Parsed::Other),
                "{other:?} should go to hyper"
            );
        }
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nHost: a\r\n", 8192),
            Parsed::Partial
        ));
        // Too large to wait for: hyper answers 431.
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nHost: aaaaaaaa", 16),
            Parsed::Other
        ));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let keep = |text: &str| {
            let mut head = Head::default();
            match parse(text.as_bytes(), 8192, &mut head) {
                Parsed::Complete => head.keep_alive,
                _ => panic!("{text:?} is plain"),
            }
        };
        assert!(keep("GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }
}
