//! The gateway's HTTP/1.1 connection loop: every HTTP/1 request on a gateway listener is read,
//! handed to the service and answered here, on the grammar of `crate::wire`.
//!
//! A general server (hyper) pays on every request for what a proxy's small requests do not use:
//! a dispatcher state machine, the glue between its service trait and tower's, boxed futures and
//! timers. This loop parses each head once, awaits the handler's future in the connection's own
//! task, and writes the response with one vectored write per body frame, its head riding with the
//! first. Requests with bodies are served too: the loop reads the body from the client as the
//! handler asks for it (`request_body`), and says `100 Continue` when the handler first does.
//!
//! What it guarantees:
//! - a request head must arrive within the header read timeout (which also bounds an idle
//!   keep-alive connection); malformed heads get 400 (431, 414) and the connection closes;
//! - while a request is handled the loop keeps reading: a client that hangs up cancels its
//!   request (the handler's future is dropped, and with it the upstream exchange);
//! - a client that stops reading gets no more than the send timeout between two writes;
//! - a connection whose request body was not read to its end is closed after the response,
//!   so no byte of one request is ever read as the head of another;
//! - a `101` to a request that asked to switch protocols turns the connection into a tunnel
//!   (`tunnel`), still inside this task and its place under the connection cap;
//! - draining closes idle connections at once and others after their response; the listener's
//!   closing ends anything, tunnels included.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ConnectInfo;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use platform::server::listener::Control;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::request_body::{self, Piece};
use super::tunnel::{self, UpstreamUpgrade};
use super::zero_copy::ZeroCopy;
use crate::wire::{self, BodyFraming, ChunkedDecoder, Decoded, HeadError, RequestHead};

/// A service as this loop calls it: one request at a time, its future awaited inside the
/// connection's own task (a tower service's future has to be a type of its own, so an `async`
/// handler's is boxed: allocated and copied, kilobytes for a proxy, on every request).
pub(crate) trait LeanService: Send + 'static {
    /// The response body.
    type Body: Body<Data = Bytes> + Send + 'static;

    fn call_lean(
        &mut self,
        request: Request<axum::body::Body>,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

impl<H: platform::Handler> LeanService for platform::WithRequestLayers<H> {
    type Body = axum::body::Body;

    fn call_lean(
        &mut self,
        request: Request<axum::body::Body>,
    ) -> impl Future<Output = Response<axum::body::Body>> + Send {
        self.call_layered(request)
    }
}

/// The loop's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A request head must arrive within this time of the loop starting to wait for it.
    pub(crate) header_read_timeout: Duration,
    /// Largest request head (and trailer section); larger ones get 431.
    pub(crate) max_header_size: usize,
    /// Longest wait for the client to take more of a response.
    pub(crate) send_timeout: Duration,
}

/// Bytes read ahead of the handler (pipelined requests) at most while a request is handled.
const READ_AHEAD: usize = 64 * 1024;

/// Serves requests on `io`, whose first bytes (`buf`) are read already, until the connection
/// ends.
pub(crate) async fn serve<T, S>(
    io: &mut T,
    mut buf: BytesMut,
    peer: SocketAddr,
    offer: Option<&ZeroCopy>,
    mut service: S,
    limits: Limits,
    control: &Control,
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: LeanService,
    <S::Body as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut out = Vec::with_capacity(512);
    // Made once for the connection: on a keep-alive connection the loop waits for a head once
    // per request, and registering a timer and listeners each time would cost more than parsing
    // the head.
    let mut drain = pin!(control.draining());
    let mut recycled = pin!(control.recycled());
    let mut closing = pin!(control.closing());
    let mut deadline = platform::coarse_timer::CoarseSleep::after(limits.header_read_timeout);
    let mut head = RequestHead::default();
    loop {
        // Waiting for a head: the listener may recycle the connection when at its cap.
        control.waiting();
        let mut armed = false;
        loop {
            match wire::parse_request(&buf, limits.max_header_size, &mut head) {
                Ok(true) => break,
                Ok(false) => {}
                // HTTP/2's preface after HTTP/1 requests: not a request to answer (as hyper).
                Err(_) if buf.starts_with(platform::server::detect::H2_PREFACE) => return Ok(()),
                Err(error) => return refuse(io, &mut out, error, limits.send_timeout).await,
            }
            if !armed {
                // The whole head must arrive within the timeout, however it is split.
                deadline.reset_after(limits.header_read_timeout);
                armed = true;
            }
            buf.reserve(4096);
            let read = tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => read?,
                () = &mut deadline => return Ok(()),
                // An idle connection closes when draining starts; one mid-head gets its answer
                // first.
                () = &mut drain, if buf.is_empty() => return Ok(()),
                () = &mut recycled => return Ok(()),
                () = &mut closing => return Ok(()),
            };
            if read == 0 {
                // The client closed (mid-head or between requests): nothing to answer.
                return Ok(());
            }
        }
        if !control.busy() {
            // Recycled as the head came in: the request was not started, so closing is safe.
            return Ok(());
        }
        let bytes = buf.split_to(head.len).freeze();
        let Some(mut request) = request(&bytes, &head, peer, offer) else {
            let error = HeadError::Invalid("invalid request target or header");
            return refuse(io, &mut out, error, limits.send_timeout).await;
        };
        let mut body = Reading::None;
        match head.body {
            BodyFraming::None => {}
            BodyFraming::Length(length) if buf.len() as u64 >= length => {
                // All here already (a small body usually comes with its head).
                let whole = buf.split_to(length as usize).freeze();
                *request.body_mut() = axum::body::Body::from(whole);
            }
            framing => {
                let length = match framing {
                    BodyFraming::Length(length) => Some(length),
                    _ => None,
                };
                let (sender, channel) = request_body::channel(length, head.expect_continue);
                *request.body_mut() = axum::body::Body::new(channel);
                body = Reading::Body(Pump {
                    sender,
                    framing: match length {
                        Some(length) => Framing::Length(length),
                        None => Framing::Chunked(ChunkedDecoder::new(limits.max_header_size)),
                    },
                });
            }
        }
        let head_request = head.method == Method::HEAD;
        let asked_upgrade = head.upgrade;
        // Requests on one connection come one at a time: the connection's own service takes
        // them all, and its future is awaited here rather than boxed.
        let mut response = {
            let mut handling = pin!(service.call_lean(request));
            loop {
                tokio::select! {
                    biased;
                    response = &mut handling => break response,
                    event = body.advance(io, &mut buf, limits.send_timeout) => match event {
                        Event::Progress => {}
                        // Dropping the handler's future cancels the request, upstream too.
                        Event::ClientGone => return Ok(()),
                    },
                    () = &mut closing => return Ok(()),
                }
            }
        };
        // A body not read to its end leaves the connection out of step: close after answering.
        let in_step = body.finished();
        drop(body);
        let switching = asked_upgrade && response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let upgrade = switching
            .then(|| response.extensions_mut().remove::<UpstreamUpgrade>())
            .flatten();
        let keep_alive = head.keep_alive && in_step && !control.is_draining();
        let writing = respond(
            io,
            &mut out,
            response,
            head.version,
            head_request,
            keep_alive && !switching,
            limits.send_timeout,
        );
        let kept_alive = tokio::select! {
            written = writing => written?,
            () = &mut closing => return Ok(()),
        };
        if switching {
            return match upgrade {
                Some(upgrade) => tunnel::run(io, &buf, upgrade, closing).await,
                // A 101 with nothing to join: the handler said it switched, but cannot deliver.
                None => Ok(()),
            };
        }
        if !kept_alive {
            return Ok(());
        }
    }
}

/// Answers a head that cannot be served, and ends the connection.
async fn refuse<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut Vec<u8>,
    error: HeadError,
    send_timeout: Duration,
) -> io::Result<()> {
    tracing::debug!(%error, "request refused");
    let status = error.status();
    let body =
        serde_json::json!({ "status": status.as_u16(), "message": error.to_string() }).to_string();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\ndate: ");
    with_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    write_all(io, &mut [IoSlice::new(out)], send_timeout).await
}

/// The request `head` describes, its target and header values sharing `bytes`.
fn request(
    bytes: &Bytes,
    head: &RequestHead,
    peer: SocketAddr,
    offer: Option<&ZeroCopy>,
) -> Option<Request<axum::body::Body>> {
    let slice = |(start, end): wire::head::Span| bytes.slice(start as usize..end as usize);
    let uri = Uri::from_maybe_shared(slice(head.target)).ok()?;
    // Room for the request id, which the contract's layers add when the client sent none. More
    // would cost: past 1 KiB the entries take the allocator's slower path.
    let mut headers = HeaderMap::with_capacity(head.headers.len() + 1);
    for &(name, value) in &head.headers {
        let name = HeaderName::from_bytes(&bytes[name.0 as usize..name.1 as usize]).ok()?;
        // httparse has checked the value's bytes.
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

/// The client's side of the connection while a request is handled.
enum Reading {
    /// No body (or all of it was in hand): only watching for the client to hang up.
    None,
    Body(Pump),
    /// The body has ended.
    Done,
    /// The body cannot be read on (the handler dropped it, or it was malformed): nothing more is
    /// read, and the connection closes after the response.
    Stopped,
}

/// Passes a request body from the client to the handler.
struct Pump {
    sender: request_body::Sender,
    framing: Framing,
}

enum Framing {
    /// This many bytes to go.
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// What one step of [`Reading::advance`] came to.
enum Event {
    Progress,
    ClientGone,
}

impl Reading {
    fn finished(&self) -> bool {
        matches!(self, Reading::None | Reading::Done)
    }

    /// Does one step of reading: passes a piece of the body on, or reads ahead (pipelined
    /// requests) to notice a client that hangs up. Never resolves once there is nothing to do.
    async fn advance<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        buf: &mut BytesMut,
        send_timeout: Duration,
    ) -> Event {
        let pump = match self {
            Reading::Body(pump) => pump,
            Reading::None | Reading::Done if buf.len() < READ_AHEAD => {
                buf.reserve(4096);
                return match io.read_buf(buf).await {
                    Ok(0) | Err(_) => Event::ClientGone,
                    Ok(_) => Event::Progress,
                };
            }
            _ => return std::future::pending().await,
        };
        if let Some(wanted) = pump.sender.wanted.take() {
            if wanted.await.is_err() {
                // The handler dropped the body unread.
                *self = Reading::Stopped;
                return Event::Progress;
            }
            let mut continuing = [IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n")];
            if write_all(io, &mut continuing, send_timeout).await.is_err() {
                return Event::ClientGone;
            }
        }
        let Ok(permit) = pump.sender.pieces.reserve().await else {
            // The handler dropped the body before its end.
            *self = Reading::Stopped;
            return Event::Progress;
        };
        loop {
            let piece = match &mut pump.framing {
                Framing::Length(left) if !buf.is_empty() => {
                    let take = (*left).min(buf.len() as u64) as usize;
                    *left -= take as u64;
                    Some(Ok(Some(buf.split_to(take).freeze())))
                }
                Framing::Length(_) => None,
                Framing::Chunked(decoder) => match decoder.decode(buf) {
                    Ok(Decoded::Data(data)) => Some(Ok(Some(data))),
                    Ok(Decoded::End) => Some(Ok(None)),
                    Ok(Decoded::More) => None,
                    Err(error) => Some(Err(error)),
                },
            };
            match piece {
                Some(Ok(Some(data))) => {
                    permit.send(Piece::Data(data));
                    if matches!(pump.framing, Framing::Length(0)) {
                        // The body knows its length, and ends with its last byte.
                        *self = Reading::Done;
                    }
                    return Event::Progress;
                }
                Some(Ok(None)) => {
                    permit.send(Piece::End);
                    *self = Reading::Done;
                    return Event::Progress;
                }
                Some(Err(error)) => {
                    permit.send(Piece::Error(Box::new(error)));
                    *self = Reading::Stopped;
                    return Event::Progress;
                }
                None => {}
            }
            buf.reserve(16 * 1024);
            match io.read_buf(buf).await {
                Ok(0) | Err(_) => return Event::ClientGone,
                Ok(_) => {}
            }
        }
    }
}

/// Writes `response`. `Ok(true)` when the connection can take another request.
async fn respond<T, B>(
    io: &mut T,
    out: &mut Vec<u8>,
    response: Response<B>,
    version: Version,
    head_request: bool,
    mut keep_alive: bool,
    send_timeout: Duration,
) -> io::Result<bool>
where
    T: AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
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
            if wire::head::has_token(value.as_bytes(), b"close") {
                keep_alive = false;
            }
            // A switch of protocols keeps its `Connection: upgrade`.
            if !switching {
                continue;
            }
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
    if !switching {
        match (keep_alive, version) {
            (false, _) => out.extend_from_slice(b"connection: close\r\n"),
            (true, Version::HTTP_10) => out.extend_from_slice(b"connection: keep-alive\r\n"),
            (true, _) => {}
        }
    }
    out.extend_from_slice(b"\r\n");

    let mut body = pin!(body);
    if bodiless {
        write_all(io, &mut [IoSlice::new(out)], send_timeout).await?;
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
                    write_all(io, &mut [IoSlice::new(out)], send_timeout).await?;
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
            (wire::chunk_size_line(data.len(), &mut size_line), b"\r\n")
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
            send_timeout,
        )
        .await?;
    }
    let head: &[u8] = if head_sent { b"" } else { out };
    let last: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
    if !head.is_empty() || !last.is_empty() {
        write_all(
            io,
            &mut [IoSlice::new(head), IoSlice::new(last)],
            send_timeout,
        )
        .await?;
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

/// Writes all of `slices`; fails when the client takes nothing for `send_timeout`.
async fn write_all<T: AsyncWrite + Unpin>(
    io: &mut T,
    slices: &mut [IoSlice<'_>],
    send_timeout: Duration,
) -> io::Result<()> {
    use futures_util::FutureExt;
    use tokio::io::AsyncWriteExt;
    let mut slices = &mut slices[..];
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        // Usually the socket takes it at once; only a write that has to wait is timed.
        let written = match io.write_vectored(slices).now_or_never() {
            Some(written) => written?,
            None => platform::coarse_timer::timeout(send_timeout, io.write_vectored(slices))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took nothing within the send timeout",
                    )
                })??,
        };
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
        let this_second = platform::coarse_timer::unix_seconds();
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
mod tests;
