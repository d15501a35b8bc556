//! The HTTP/1.1 client the gateway talks to upstream servers with.
//!
//! Keep-alive connections wait in a pool per worker thread and server address. A request is
//! written by the task that proxies it, in one write when its body is in memory; the response head
//! is parsed in place (httparse) and the body read straight from the socket by [`UpstreamBody`],
//! whose end puts the connection back in the pool. A general client library costs a channel, a
//! hand-off and a second state machine per request here, which is about a sixth of what a proxied
//! request costs in all. Upgrades (WebSocket) go through hyper's client, on a connection of their
//! own.
//!
//! An idle connection is checked before reuse (one the server has closed is dropped). A request
//! that a pooled connection could not send at all is sent on a new connection, and so is an
//! idempotent one whose pooled connection closed without a byte of answer: the server closed it
//! as the request went out. Idle connections are closed after the upstream's `idle_timeout` (give
//! or take the coarse clock's tick, 0.1 s: see `platform::coarse_timer::millis`).
//!
//! Framing follows RFC 9112: the request is sent with `Content-Length` when its size is known and
//! chunked otherwise (never both, whatever the client sent); the response body is delimited by
//! its `Transfer-Encoding` (chunked), else its `Content-Length`, else the end of the connection,
//! and has none for `HEAD`, 1xx, 204 and 304. Interim 1xx responses are skipped. A connection is
//! reused only after a response that is complete, framed by length or chunks, and not marked
//! `Connection: close`.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::wire::head::{ResponseFraming, ResponseHead};
use crate::wire::{self, ChunkedDecoder, Decoded};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way upstream as a stream (the client's, when too large to keep).
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Idle connections kept per server address on one thread at most.
const MAX_IDLE_PER_SERVER: usize = 1024;

/// How often a thread's idle connections are checked for being closed or expired, at most (in
/// milliseconds of the coarse clock).
const SWEEP_EVERY_MS: u64 = 1000;

/// Largest response head (status line and headers), and trailer section, accepted from a
/// server.
const MAX_HEAD: usize = 64 * 1024;

/// Bytes asked for per read from a server.
const READ_SIZE: usize = 16 * 1024;

/// Request bodies up to this size are copied behind the head and written with it.
const COPY_BODY_UP_TO: usize = 4096;

/// Connects to upstream servers and sends them requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client {
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Longest wait between two reads of a response body.
    read_timeout: Duration,
}

/// A request body for one attempt.
pub(crate) enum Payload {
    /// All of it, in memory (possibly empty).
    Whole(Bytes),
    /// Still coming from the client.
    Stream(ProxyBody),
}

impl Payload {
    fn into_body(self) -> ProxyBody {
        match self {
            Payload::Whole(bytes) => http_body_util::Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync(),
            Payload::Stream(body) => body,
        }
    }
}

/// The head of a request to send upstream, borrowed from wherever it is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    pub(crate) method: &'a Method,
    /// In origin form: `/path?query`.
    pub(crate) path: &'a str,
    pub(crate) headers: &'a HeaderMap,
    /// Sent after `headers` (the forwarding headers).
    pub(crate) extra: &'a [(HeaderName, HeaderValue)],
}

impl<'a> Outgoing<'a> {
    /// The head of `request`, whose URI is in origin form.
    pub(crate) fn of<B>(request: &'a Request<B>) -> Self {
        Outgoing {
            method: request.method(),
            path: request.uri().path_and_query().map_or("/", |p| p.as_str()),
            headers: request.headers(),
            extra: &[],
        }
    }

    /// An owned request with this head, for hyper's client (upgrades).
    fn to_request(self, body: ProxyBody) -> Result<Request<ProxyBody>, SendError> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path.parse().map_err(|e| {
            SendError::NotSent(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("path: {e}"),
            ))
        })?;
        let mut headers = self.headers.clone();
        for (name, value) in self.extra {
            headers.insert(name.clone(), value.clone());
        }
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// The connection failed before any of the request was written.
    #[error("connection failed before the request was sent: {0}")]
    NotSent(io::Error),
    /// The exchange failed after (some of) the request was written.
    #[error("{0}")]
    Exchange(io::Error),
    /// The client's request body failed while it was being sent.
    #[error("request body: {0}")]
    Body(BoxError),
    /// An upgrade's exchange (through hyper) failed.
    #[error(transparent)]
    Http(hyper::Error),
}

impl SendError {
    /// Whether the server cannot have seen the request, so that sending it elsewhere is safe
    /// whatever its method.
    pub(crate) fn never_sent(&self) -> bool {
        matches!(
            self,
            SendError::Connect(_) | SendError::ConnectTimeout(_) | SendError::NotSent(_)
        )
    }

    /// The error of the client's request body, when that is what broke the exchange.
    pub(crate) fn client_body(&self) -> Option<&crate::body::ClientBodyError> {
        match self {
            SendError::Body(error) => crate::body::ClientBodyError::find(&**error),
            SendError::Http(error) => crate::body::ClientBodyError::find(error),
            _ => None,
        }
    }
}

impl Client {
    pub(crate) fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        read_timeout: Duration,
    ) -> Self {
        Client {
            connect_timeout,
            idle_timeout,
            read_timeout,
        }
    }

    /// Sends `request` (its path in origin form, with a `Host` header and no hop-by-hop headers)
    /// and `payload` to the server at `address`, on a pooled connection when one is idle. With
    /// `upgrade`, the connection is new and dedicated, so that the response can switch protocols.
    ///
    /// The head is borrowed, not owned: a request retried on another server sends the same head
    /// again without a copy, and the future stays small.
    pub(crate) async fn send(
        &self,
        address: &Arc<str>,
        request: Outgoing<'_>,
        mut payload: Payload,
        upgrade: bool,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if upgrade {
            // Boxed here and below: code that few requests run stays out of the hot path's.
            return Box::pin(
                self.send_upgradable(address, request.to_request(payload.into_body())?),
            )
            .await;
        }
        let head = encode_head(&request, &payload);
        let head_only = request.method == Method::HEAD;
        loop {
            let (pooled, mut conn) = match checkout(address) {
                Some(conn) => (true, conn),
                None => (false, Box::pin(self.connect(address)).await?),
            };
            let answered_early = match conn.write_request(&head, &mut payload).await {
                Ok(answered_early) => answered_early,
                // The server closed the idle connection as the request went out: any request may
                // go again, on a new connection.
                Err(WriteError::NotSent(_)) if pooled => continue,
                Err(WriteError::NotSent(error)) => return Err(SendError::NotSent(error)),
                Err(WriteError::Io(error)) => return Err(SendError::Exchange(error)),
                Err(WriteError::Body(error)) => return Err(SendError::Body(error)),
            };
            match conn.read_head(head_only).await {
                Ok((head, framing, keep_alive)) => {
                    let body = UpstreamBody::raw(
                        conn,
                        framing,
                        keep_alive && !answered_early,
                        address,
                        (self.idle_timeout, self.read_timeout),
                    );
                    return Ok(Response::from_parts(head, body));
                }
                Err(ReadError::ClosedUnanswered(_))
                    if pooled
                        && matches!(payload, Payload::Whole(_))
                        && request.method.is_idempotent() => {}
                Err(ReadError::ClosedUnanswered(error) | ReadError::Io(error)) => {
                    return Err(SendError::Exchange(error));
                }
            }
        }
    }

    /// [`Client::send`] for a whole request.
    #[cfg(test)]
    async fn send_request(
        &self,
        address: &Arc<str>,
        request: Request<Payload>,
        upgrade: bool,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (parts, payload) = request.into_parts();
        let head = Request::from_parts(parts, ());
        self.send(address, Outgoing::of(&head), payload, upgrade)
            .await
    }

    async fn send_upgradable(
        &self,
        address: &Arc<str>,
        request: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let stream = self.connect_stream(address).await?;
        let (mut sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(SendError::Http)?;
        Ok(response.map(|body| UpstreamBody(Inner::Hyper(body))))
    }

    async fn connect(&self, address: &str) -> Result<Conn, SendError> {
        Ok(Conn {
            stream: self.connect_stream(address).await?,
            buf: BytesMut::new(),
        })
    }

    async fn connect_stream(&self, address: &str) -> Result<TcpStream, SendError> {
        let connecting = async {
            match address.parse::<SocketAddr>() {
                Ok(addr) => TcpStream::connect(addr).await,
                // A name whose lookup failed so far: let the system try again.
                Err(_) => TcpStream::connect(address).await,
            }
        };
        let stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| SendError::ConnectTimeout(self.connect_timeout))?
            .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        Ok(stream)
    }
}

/// The request line, the headers (but those that frame the body, which are the client's business
/// with this gateway) and the framing of `payload`; a small body in memory follows the head.
fn encode_head(request: &Outgoing<'_>, payload: &Payload) -> Vec<u8> {
    let Outgoing {
        method,
        path,
        headers,
        extra,
    } = *request;
    let mut head = Vec::with_capacity(256 + headers.len() * 48);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers.iter().chain(extra.iter().map(|(n, v)| (n, v))) {
        // `Expect: 100-continue` was the client's question to this gateway, which answered it.
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let length = match payload {
        Payload::Whole(bytes) => Some(bytes.len() as u64),
        Payload::Stream(body) => body.size_hint().exact(),
    };
    match length {
        // A request without a body says nothing of it, unless its method usually has one or
        // the client said so.
        Some(0)
            if !headers.contains_key(header::CONTENT_LENGTH)
                && !matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {}
        Some(length) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    if let Payload::Whole(bytes) = payload
        && bytes.len() <= COPY_BODY_UP_TO
    {
        head.extend_from_slice(bytes);
    }
    head
}

/// How much of a response body is left, and how it ends.
#[derive(Debug)]
enum Framing {
    /// After this many more bytes.
    Length(u64),
    /// With the last chunk (RFC 9112 section 7.1).
    Chunked(ChunkedDecoder),
    /// When the server closes the connection.
    Close,
    /// It has ended.
    Done,
}

impl Framing {
    fn of(framing: ResponseFraming) -> Self {
        match framing {
            ResponseFraming::Length(length) => Framing::Length(length),
            ResponseFraming::Chunked => Framing::Chunked(ChunkedDecoder::new(MAX_HEAD)),
            ResponseFraming::Close => Framing::Close,
        }
    }

    fn ended(&self) -> bool {
        matches!(self, Framing::Done | Framing::Length(0))
    }
}

enum WriteError {
    /// Nothing was written.
    NotSent(io::Error),
    /// Part of the request was written.
    Io(io::Error),
    /// The client's body failed.
    Body(BoxError),
}

enum ReadError {
    /// The server closed the connection (or reset it) before a byte of its answer.
    ClosedUnanswered(io::Error),
    Io(io::Error),
}

/// The client's body did not match what it announced: its fault, not the server's.
fn broken_body(what: &str) -> WriteError {
    WriteError::Body(Box::new(crate::body::ClientBodyError::Broken(what.into())))
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// A connection to a server, with what has been read from it and not yet used.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Writes the request. `Ok(true)` when the server answered before the body was all sent (the
    /// rest is not sent, and the connection cannot be used again).
    async fn write_request(
        &mut self,
        head: &[u8],
        payload: &mut Payload,
    ) -> Result<bool, WriteError> {
        let mut written = 0;
        let outcome = match payload {
            Payload::Whole(bytes) if bytes.len() > COPY_BODY_UP_TO => {
                let mut slices = [IoSlice::new(head), IoSlice::new(bytes)];
                write_all(&self.stream, &mut &mut slices[..], &mut written).await
            }
            // The head holds a small body already.
            _ => {
                write_all(
                    &self.stream,
                    &mut &mut [IoSlice::new(head)][..],
                    &mut written,
                )
                .await
            }
        };
        match outcome {
            Ok(()) => {}
            Err(error) if written == 0 => return Err(WriteError::NotSent(error)),
            Err(error) => return Err(WriteError::Io(error)),
        }
        match payload {
            Payload::Whole(_) => Ok(false),
            // Boxed: streaming is for large bodies, and its code stays out of the usual path.
            Payload::Stream(body) => Box::pin(self.write_stream(body, written)).await,
        }
    }

    /// Sends a streamed body after its head (`written` bytes so far). `Ok(true)` when the server
    /// answered before the body was all sent.
    async fn write_stream(
        &mut self,
        body: &mut ProxyBody,
        mut written: usize,
    ) -> Result<bool, WriteError> {
        let mut declared = body.size_hint().exact();
        let chunked = declared.is_none();
        loop {
            let frame = tokio::select! {
                biased;
                answered = answered(&self.stream, &mut self.buf) => match answered {
                    Ok(true) => return Ok(true),
                    Ok(false) => continue,
                    Err(error) => return Err(WriteError::Io(error)),
                },
                frame = body.frame() => frame,
            };
            let data = match frame {
                None => break,
                Some(Err(error)) => return Err(WriteError::Body(error)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => data,
                    // Trailers are not passed on.
                    Err(_) => continue,
                },
            };
            if let Some(left) = &mut declared {
                *left = left.checked_sub(data.len() as u64).ok_or_else(|| {
                    broken_body("the request body is longer than its Content-Length")
                })?;
            }
            let mut size_line = [0u8; 18];
            let (size_line, crlf): (&[u8], &[u8]) = if chunked {
                (wire::chunk_size_line(data.len(), &mut size_line), b"\r\n")
            } else {
                (b"", b"")
            };
            let mut slices = [
                IoSlice::new(size_line),
                IoSlice::new(&data),
                IoSlice::new(crlf),
            ];
            let mut slices = &mut slices[..];
            // Until this piece is written, or the server answers.
            loop {
                tokio::select! {
                    biased;
                    answered = answered(&self.stream, &mut self.buf) => match answered {
                        Ok(true) => return Ok(true),
                        Ok(false) => {}
                        Err(error) => return Err(WriteError::Io(error)),
                    },
                    sent = write_all(&self.stream, &mut slices, &mut written) => {
                        sent.map_err(WriteError::Io)?;
                        break;
                    }
                }
            }
        }
        if declared.is_some_and(|left| left > 0) {
            return Err(broken_body(
                "the request body ended before its Content-Length",
            ));
        }
        if chunked {
            let mut last = [IoSlice::new(b"0\r\n\r\n")];
            write_all(&self.stream, &mut &mut last[..], &mut written)
                .await
                .map_err(WriteError::Io)?;
        }
        Ok(false)
    }

    /// Reads more from the server into the buffer; `Ok(0)` at its end.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }

    /// Reads the response head, skipping interim (1xx) responses: the head, how the body is
    /// framed, and whether the connection may be used again after it.
    async fn read_head(
        &mut self,
        head_only: bool,
    ) -> Result<(http::response::Parts, ResponseFraming, bool), ReadError> {
        let mut received = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                let parsed = wire::head::parse_response(&mut self.buf, head_only, MAX_HEAD)
                    .map_err(|e| ReadError::Io(invalid(e.0)))?;
                match parsed {
                    ResponseHead::Complete(parts, framing, keep_alive) => {
                        return Ok((parts, framing, keep_alive));
                    }
                    ResponseHead::Interim => continue,
                    ResponseHead::Partial => {}
                }
            }
            let read = std::future::poll_fn(|cx| self.poll_read_more(cx)).await;
            match read {
                Ok(0) | Err(_) if !received => {
                    let error = read.err().unwrap_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection without answering",
                        )
                    });
                    return Err(ReadError::ClosedUnanswered(error));
                }
                Ok(0) => {
                    return Err(ReadError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection in the middle of the response head",
                    )));
                }
                Ok(_) => received = true,
                Err(error) => return Err(ReadError::Io(error)),
            }
        }
    }
}

/// Resolves when the server has sent something (`true`, the bytes in `buf`), or when the socket
/// was only said to be readable (`false`); fails when the server closed the connection.
async fn answered(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    stream.readable().await?;
    buf.reserve(READ_SIZE);
    match stream.try_read_buf(buf) {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the server closed the connection while the request was being sent",
        )),
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(error) => Err(error),
    }
}

/// Writes all of `slices`, taking what is written off them (so that a write cancelled between
/// two system calls can go on where it stopped), and counting it into `written`.
async fn write_all(
    stream: &TcpStream,
    slices: &mut &mut [IoSlice<'_>],
    written: &mut usize,
) -> io::Result<()> {
    IoSlice::advance_slices(slices, 0);
    while !slices.is_empty() {
        match stream.try_write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *written += n;
                IoSlice::advance_slices(slices, n);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A response body from upstream. Its end puts the connection back in the pool; dropped before
/// its end, it closes the connection.
pub(crate) struct UpstreamBody(Inner);

enum Inner {
    Raw(RawBody),
    /// An upgrade's response (through hyper).
    Hyper(Incoming),
}

struct RawBody {
    /// `None` once the body has ended.
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    address: Arc<str>,
    idle_timeout: Duration,
    /// Longest wait for the next bytes of the body.
    read_timeout: Duration,
    /// While waiting for bytes: when the wait fails.
    deadline: Option<platform::coarse_timer::CoarseSleep>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Raw(raw) => f
                .debug_struct("UpstreamBody")
                .field("address", &raw.address)
                .field("framing", &raw.framing)
                .finish_non_exhaustive(),
            Inner::Hyper(_) => f.write_str("UpstreamBody(upgrade)"),
        }
    }
}

impl UpstreamBody {
    fn raw(
        conn: Conn,
        framing: ResponseFraming,
        keep_alive: bool,
        address: &Arc<str>,
        timeouts: (Duration, Duration),
    ) -> Self {
        let (idle_timeout, read_timeout) = timeouts;
        let mut raw = RawBody {
            conn: Some(conn),
            framing: Framing::of(framing),
            keep_alive,
            address: Arc::clone(address),
            idle_timeout,
            read_timeout,
            deadline: None,
        };
        if raw.framing.ended() {
            // Nothing to read: the connection is free now.
            raw.end();
        }
        UpstreamBody(Inner::Raw(raw))
    }
}

impl UpstreamBody {
    /// The whole body, when it has a length and all of it has arrived already (it often comes
    /// with the head): taken without reading. The connection is free afterwards.
    pub(crate) fn take_whole(&mut self) -> Option<Bytes> {
        let Inner::Raw(raw) = &mut self.0 else {
            return None;
        };
        let Framing::Length(length) = raw.framing else {
            return None;
        };
        let conn = raw.conn.as_mut()?;
        let length = usize::try_from(length).ok()?;
        if conn.buf.len() < length {
            return None;
        }
        let whole = conn.buf.split_to(length).freeze();
        raw.end();
        Some(whole)
    }
}

impl RawBody {
    /// The body has ended: the connection goes back to the pool if it can be used again.
    fn end(&mut self) {
        self.framing = Framing::Done;
        self.deadline = None;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            // Bytes beyond the response: the server is out of step.
            && conn.buf.is_empty()
        {
            checkin(&self.address, conn, self.idle_timeout);
        }
    }

    fn fail(&mut self, error: io::Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.framing = Framing::Done;
        self.conn = None;
        self.deadline = None;
        Poll::Ready(Some(Err(error.into())))
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match decode(&mut self.framing, &mut conn.buf) {
                Ok(Some(data)) => {
                    if self.framing.ended() {
                        self.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) if self.framing.ended() => {
                    self.end();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(error) => return self.fail(error),
            }
            match conn.poll_read_more(cx) {
                Poll::Ready(Ok(0)) if matches!(self.framing, Framing::Close) => {
                    self.keep_alive = false;
                    self.end();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    return self.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before the end of the response body",
                    ));
                }
                Poll::Ready(Ok(_)) => self.deadline = None,
                Poll::Ready(Err(error)) => return self.fail(error),
                Poll::Pending => {
                    let read_timeout = self.read_timeout;
                    let deadline = self.deadline.get_or_insert_with(|| {
                        platform::coarse_timer::CoarseSleep::after(read_timeout)
                    });
                    ready!(Pin::new(deadline).poll(cx));
                    return self.fail(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no bytes of the response body within {read_timeout:?}"),
                    ));
                }
            }
        }
    }
}

/// Takes the next piece of body data off `buf`, advancing `framing`; `None` when more bytes are
/// needed, or the body has ended.
fn decode(framing: &mut Framing, buf: &mut BytesMut) -> io::Result<Option<Bytes>> {
    match framing {
        Framing::Done | Framing::Length(0) => Ok(None),
        _ if buf.is_empty() => Ok(None),
        Framing::Length(left) => {
            let take = (*left).min(buf.len() as u64) as usize;
            *left -= take as u64;
            Ok(Some(buf.split_to(take).freeze()))
        }
        Framing::Close => Ok(Some(buf.split().freeze())),
        Framing::Chunked(decoder) => match decoder.decode(buf) {
            Ok(Decoded::Data(data)) => Ok(Some(data)),
            Ok(Decoded::More) => Ok(None),
            Ok(Decoded::End) => {
                *framing = Framing::Done;
                Ok(None)
            }
            Err(error) => Err(invalid(format!("{error} in the response"))),
        },
    }
}

/// The whole body of a response framed so, from `buf` followed by the end of the stream, as
/// [`UpstreamBody`] reads it: `None` when it is malformed or cut short. For the differential
/// tests (`crate::fuzzing`).
pub(crate) fn decode_all(framing: ResponseFraming, mut buf: BytesMut) -> Option<Bytes> {
    let mut framing = Framing::of(framing);
    let mut body = BytesMut::new();
    loop {
        match decode(&mut framing, &mut buf) {
            Ok(Some(data)) => body.extend_from_slice(&data),
            Ok(None) if framing.ended() => return Some(body.freeze()),
            // More is needed, and the stream has ended: complete only if the end frames it.
            Ok(None) => return matches!(framing, Framing::Close).then(|| body.freeze()),
            Err(_) => return None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Inner::Raw(raw) => raw.poll_frame(cx),
            Inner::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Raw(raw) => raw.framing.ended(),
            Inner::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Raw(raw) => match &raw.framing {
                Framing::Length(left) => SizeHint::with_exact(*left),
                Framing::Done => SizeHint::with_exact(0),
                _ => SizeHint::default(),
            },
            Inner::Hyper(body) => body.size_hint(),
        }
    }
}

/// An idle connection in the pool.
struct Idle {
    conn: Conn,
    /// On the coarse clock's milliseconds.
    expires: u64,
}

impl Idle {
    /// Whether the connection can take a request: not expired, and the server has neither closed
    /// it nor sent anything unasked.
    fn usable(&mut self, now: u64) -> bool {
        if now >= self.expires {
            return false;
        }
        // Polling without a waker only looks.
        let mut cx = Context::from_waker(Waker::noop());
        match self.conn.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                matches!(self.conn.stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Idle connections by server address. The addresses come from the config, not from clients, so
/// a fast hash that an attacker could collide does no harm.
type Pool = rustc_hash::FxHashMap<Arc<str>, Vec<Idle>>;

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
    static LAST_SWEEP: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The most recently used idle connection to `address` that is still usable.
fn checkout(address: &str) -> Option<Conn> {
    let now = platform::coarse_timer::millis();
    POOL.with_borrow_mut(|pool| {
        let idle = pool.get_mut(address)?;
        while let Some(mut candidate) = idle.pop() {
            if candidate.usable(now) {
                return Some(candidate.conn);
            }
        }
        None
    })
}

fn checkin(address: &Arc<str>, conn: Conn, idle_timeout: Duration) {
    let now = platform::coarse_timer::millis();
    let idle_timeout = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
    POOL.with_borrow_mut(|pool| {
        let idle = pool.entry(Arc::clone(address)).or_default();
        if idle.len() < MAX_IDLE_PER_SERVER {
            idle.push(Idle {
                conn,
                expires: now.saturating_add(idle_timeout),
            });
        }
    });
    if LAST_SWEEP
        .get()
        .is_none_or(|last| now.saturating_sub(last) >= SWEEP_EVERY_MS)
    {
        LAST_SWEEP.set(Some(now));
        sweep();
    }
}

/// Closes this thread's idle connections that have expired or that their server has closed.
pub(crate) fn sweep() {
    let now = platform::coarse_timer::millis();
    POOL.with_borrow_mut(|pool| {
        for idle in pool.values_mut() {
            idle.retain_mut(|candidate| candidate.usable(now));
        }
        pool.retain(|_, idle| !idle.is_empty());
    });
}

/// Idle connections on this thread, for tests.
#[cfg(test)]
fn idle_count(address: &str) -> usize {
    POOL.with_borrow(|pool| pool.get(address).map_or(0, Vec::len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn request(method: Method, path: &str, payload: Payload) -> Request<Payload> {
        let mut request = Request::new(payload);
        *request.method_mut() = method;
        *request.uri_mut() = path.parse().unwrap();
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("test"));
        request
    }

    fn get(path: &str) -> Request<Payload> {
        request(Method::GET, path, Payload::Whole(Bytes::new()))
    }

    fn client() -> Client {
        Client::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
    }

    async fn body_of(response: Response<UpstreamBody>) -> Result<Bytes, BoxError> {
        Ok(response.into_body().collect().await?.to_bytes())
    }

    async fn echo_server() -> (Arc<str>, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: Arc<str> = Arc::from(listener.local_addr().unwrap().to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = echo::Config {
            bind: listener.local_addr().unwrap(),
            hostname: "pooled".into(),
            common: platform::CommonConfig::from_source(&platform::Source::default()).unwrap(),
        };
        tokio::spawn(echo::run(listener, config, async {
            let _ = stopped.await;
        }));
        (address, stop)
    }

    /// Reads one request (head, and a body framed by Content-Length or chunks) off `stream`.
    async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        let ends = |buf: &[u8]| -> Option<usize> {
            let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
            let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
            if head.contains("transfer-encoding: chunked") {
                let end = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n")?;
                return Some(head_end + end + 5);
            }
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            (buf.len() >= head_end + length).then_some(head_end + length)
        };
        loop {
            if let Some(end) = ends(buf) {
                return Some(buf.drain(..end).collect());
            }
            let mut chunk = [0u8; 65536];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A server that answers each request on a connection with the next of `answers`, closing
    /// the connection after each answer marked `true`. Requests as received come out of the
    /// returned channel.
    async fn scripted(
        answers: Vec<(&'static [u8], bool)>,
    ) -> (Arc<str>, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: Arc<str> = Arc::from(listener.local_addr().unwrap().to_string());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            'connections: loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                while let Some(request) = read_request(&mut stream, &mut buf).await {
                    let _ = tx.send(request);
                    let Some((answer, close)) = answers.next() else {
                        return;
                    };
                    stream.write_all(answer).await.unwrap();
                    if close {
                        continue 'connections;
                    }
                }
            }
        });
        (address, rx)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_is_reused_once_its_body_has_been_read() {
        let (address, _stop) = echo_server().await;
        for _ in 0..5 {
            let response = client()
                .send_request(&address, get("/"), false)
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body = body_of(response).await.unwrap();
            assert!(body.starts_with(b"pooled"), "{body:?}");
            assert_eq!(idle_count(&address), 1, "one connection, back in the pool");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_dropped_before_its_end_does_not_return_its_connection() {
        let (address, _) = scripted(vec![(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345",
            false,
        )])
        .await;
        let response = client()
            .send_request(&address, get("/"), false)
            .await
            .unwrap();
        drop(response);
        assert_eq!(idle_count(&address), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_server_closed_is_not_used_again() {
        let (address, stop) = echo_server().await;
        let response = client()
            .send_request(&address, get("/"), false)
            .await
            .unwrap();
        body_of(response).await.unwrap();
        assert_eq!(idle_count(&address), 1);
        // The server shuts down (closing its idle keep-alive connections) and another takes
        // its port.
        stop.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&*address).await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let error = client()
            .send_request(&address, get("/"), false)
            .await
            .unwrap_err();
        assert!(error.never_sent(), "{error}");
        assert!(matches!(error, SendError::Connect(_)), "{error}");
        assert_eq!(idle_count(&address), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn expired_connections_are_swept() {
        let (address, _stop) = echo_server().await;
        let client = Client::new(
            Duration::from_secs(1),
            Duration::from_millis(1),
            Duration::from_secs(60),
        );
        let response = client
            .send_request(&address, get("/"), false)
            .await
            .unwrap();
        body_of(response).await.unwrap();
        // Expiry is stamped on the coarse clock, which moves a tick at a time.
        tokio::time::sleep(platform::coarse_timer::TICK * 2 + Duration::from_millis(5)).await;
        sweep();
        assert_eq!(idle_count(&address), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn responses_framed_every_way_are_read_whole() {
        let (address, _) = scripted(vec![
            // Chunks with an extension and trailers, after an interim response.
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;name=value\r\nhello\r\n1\r\n \r\n6\r\nchunks\r\n0\r\nx-trailer: 1\r\n\r\n",
                false,
            ),
            // Both: chunks win, and the length is not passed on.
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n\
                  4\r\nboth\r\n0\r\n\r\n",
                true,
            ),
            // No body for HEAD, whatever Content-Length says.
            (b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n", false),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (
                b"HTTP/1.1 200 OK\r\nx-empty:\r\ncontent-length: 6\r\nx-last:  spaced \r\n\r\nlength",
                false,
            ),
            // Until the end of the connection.
            (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", true),
        ])
        .await;
        let client = client();
        let response = client
            .send_request(&address, get("/"), false)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(!response.headers().contains_key("x-trailer"));
        assert_eq!(body_of(response).await.unwrap(), "hello chunks");
        assert_eq!(idle_count(&address), 1);

        let response = client
            .send_request(&address, get("/"), false)
            .await
            .unwrap();
        assert!(!response.headers().contains_key("content-length"));
        assert_eq!(body_of(response).await.unwrap(), "both");
        assert_eq!(
            idle_count(&address),
            0,
            "a connection that sent both is not kept"
        );

        let head = request(Method::HEAD, "/", Payload::Whole(Bytes::new()));
        let response = client.send_request(&address, head, false).await.unwrap();
        assert_eq!(response.headers()["content-length"], "99");
        assert!(response.body().is_end_stream());
        assert_eq!(idle_count(&address), 1, "back in the pool without a read");

        let response = client
            .send_request(&address, get("/"), false)
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        assert_eq!(body_of(response).await.unwrap(), "");

        let response = client
            .send_request(&address, get("/"), false)
            .await
            .unwrap();
        assert_eq!(response.body().size_hint().exact(), Some(6));
        assert_eq!(response.headers()["x-empty"], "");
        assert_eq!(response.headers()["x-last"], "spaced");
        let mut body = response.into_body();
        assert_eq!(
            body.take_whole().unwrap(),
            "length",
            "it came with the head"
        );
        assert!(body.is_end_stream());
        assert!(body.take_whole().is_none());
        assert_eq!(idle_count(&address), 1);

        let response = client
            .send_request(&address, get("/"), false)
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_10);
        assert_eq!(body_of(response).await.unwrap(), "until the end");
        assert_eq!(
            idle_count(&address),
            0,
            "a connection that ended is not kept"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn broken_responses_are_errors() {
        let cases: [&'static [u8]; 6] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        ];
        for case in cases {
            let (address, _) = scripted(vec![(case, true)]).await;
            let outcome = match client().send_request(&address, get("/"), false).await {
                Ok(response) => body_of(response).await.map(|_| ()),
                Err(error) => Err(error.into()),
            };
            let error = outcome.expect_err(&String::from_utf8_lossy(case));
            assert!(!error.to_string().is_empty());
            assert_eq!(idle_count(&address), 0);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_body_is_framed_by_what_is_known_of_its_size() {
        let ok: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let (address, mut requests) = scripted(vec![(ok, false); 4]).await;
        let client = client();
        let sent = |request| {
            let address = Arc::clone(&address);
            async move { body_of(client.send_request(&address, request, false).await.unwrap()).await }
        };

        // The client's own framing and Expect are not passed on.
        let mut with_body = request(Method::PUT, "/a?b=c", Payload::Whole(Bytes::from("abc")));
        let headers = with_body.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        headers.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        sent(with_body).await.unwrap();
        let seen = String::from_utf8(requests.recv().await.unwrap()).unwrap();
        assert_eq!(
            seen,
            "PUT /a?b=c HTTP/1.1\r\nhost: test\r\ncontent-length: 3\r\n\r\nabc"
        );

        sent(get("/")).await.unwrap();
        let seen = String::from_utf8(requests.recv().await.unwrap()).unwrap();
        assert_eq!(seen, "GET / HTTP/1.1\r\nhost: test\r\n\r\n");

        sent(request(Method::POST, "/", Payload::Whole(Bytes::new())))
            .await
            .unwrap();
        let seen = String::from_utf8(requests.recv().await.unwrap()).unwrap();
        assert!(seen.ends_with("content-length: 0\r\n\r\n"), "{seen}");

        // Of unknown size: chunked.
        let stream = futures_util::stream::iter(
            ["one", "", "three"].map(|piece| Ok::<_, BoxError>(Frame::data(Bytes::from(piece)))),
        );
        let body = http_body_util::StreamBody::new(stream).boxed_unsync();
        sent(request(Method::POST, "/", Payload::Stream(body)))
            .await
            .unwrap();
        let seen = String::from_utf8(requests.recv().await.unwrap()).unwrap();
        assert!(
            seen.ends_with("transfer-encoding: chunked\r\n\r\n3\r\none\r\n5\r\nthree\r\n0\r\n\r\n"),
            "{seen}"
        );
        assert_eq!(idle_count(&address), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_idempotent_request_goes_again_when_its_pooled_connection_closes_unanswered() {
        let ok: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        // The server answers one request per connection but does not say so: the second request
        // on a connection finds it closed.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: Arc<str> = Arc::from(listener.local_addr().unwrap().to_string());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    if read_request(&mut stream, &mut buf).await.is_some() {
                        stream.write_all(ok).await.unwrap();
                    }
                    // Waits for the next request, then closes without answering.
                    let _ = read_request(&mut stream, &mut buf).await;
                });
            }
        });
        let client = client();
        for _ in 0..3 {
            let response = client
                .send_request(&address, get("/"), false)
                .await
                .unwrap();
            assert_eq!(body_of(response).await.unwrap(), "ok");
        }
        // A POST is not sent twice.
        let post = request(Method::POST, "/", Payload::Whole(Bytes::from("x")));
        let error = client
            .send_request(&address, post, false)
            .await
            .unwrap_err();
        assert!(!error.never_sent(), "{error}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_before_the_end_of_the_request_body_stops_the_upload() {
        // The server refuses the upload after its head, without reading the body.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: Arc<str> = Arc::from(listener.local_addr().unwrap().to_string());
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig")
                .await
                .unwrap();
            // Keeps the connection open without reading, as a busy server would.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        // Far more than the socket buffers hold.
        let pieces = futures_util::stream::iter(
            (0..1024).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))),
        );
        let body = http_body_util::StreamBody::new(pieces).boxed_unsync();
        let upload = request(Method::POST, "/", Payload::Stream(body));
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            client().send_request(&address, upload, false),
        )
        .await
        .expect("the answer is read while the body is still going")
        .unwrap();
        assert_eq!(response.status(), 413);
        assert_eq!(body_of(response).await.unwrap(), "big");
        assert_eq!(idle_count(&address), 0);
    }
}
