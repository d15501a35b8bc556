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
//! or take the coarse clock's tick, 0.1 s: see `crate::coarse_timer::millis`).
//!
//! Framing follows RFC 9112: the request is sent with `Content-Length` when its size is known and
//! chunked otherwise (never both, whatever the client sent); the response body is delimited by
//! its `Transfer-Encoding` (chunked), else its `Content-Length`, else the end of the connection,
//! and has none for `HEAD`, 1xx, 204 and 304. Interim 1xx responses are skipped. A connection is
//! reused only after a response that is complete, framed by length or chunks, and not marked
//! `Connection: close`.

mod conn;
mod pool;
mod response_body;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use conn::{Conn, ReadError, WriteError};
pub(crate) use pool::sweep;
use response_body::Inner;
pub(crate) use response_body::{UpstreamBody, decode_all};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way upstream as a stream (the client's, when too large to keep).
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Largest response head (status line and headers), and trailer section, accepted from a
/// server.
const MAX_HEAD: usize = 64 * 1024;

/// Bytes asked for per read from a server.
const READ_SIZE: usize = 16 * 1024;

/// Request bodies up to this size are copied behind the head and written with it.
const COPY_BODY_UP_TO: usize = 4096;

/// A streamed request body did not match the length it announced: the client's fault, not the
/// server's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BodyMismatch(pub(crate) &'static str);

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

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

    /// The error that broke the client's request body, when that is what broke the exchange.
    pub(crate) fn body_error(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Body(error) => Some(&**error),
            SendError::Http(error) => Some(error),
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
            // Boxed here and below: few requests take these paths, and boxing keeps every request's
            // future small (`proxy::tests`).
            return Box::pin(
                self.send_upgradable(address, request.to_request(payload.into_body())?),
            )
            .await;
        }
        let head = encode_head(&request, &payload);
        let head_only = request.method == Method::HEAD;
        loop {
            let (pooled, mut conn) = match pool::checkout(address) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
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
            assert_eq!(
                pool::idle_count(&address),
                1,
                "one connection, back in the pool"
            );
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
        assert_eq!(pool::idle_count(&address), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_server_closed_is_not_used_again() {
        let (address, stop) = echo_server().await;
        let response = client()
            .send_request(&address, get("/"), false)
            .await
            .unwrap();
        body_of(response).await.unwrap();
        assert_eq!(pool::idle_count(&address), 1);
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
        assert_eq!(pool::idle_count(&address), 0);
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
        tokio::time::sleep(crate::coarse_timer::TICK * 2 + Duration::from_millis(5)).await;
        sweep();
        assert_eq!(pool::idle_count(&address), 0);
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
        assert_eq!(pool::idle_count(&address), 1);

        let response = client
            .send_request(&address, get("/"), false)
            .await
            .unwrap();
        assert!(!response.headers().contains_key("content-length"));
        assert_eq!(body_of(response).await.unwrap(), "both");
        assert_eq!(
            pool::idle_count(&address),
            0,
            "a connection that sent both is not kept"
        );

        let head = request(Method::HEAD, "/", Payload::Whole(Bytes::new()));
        let response = client.send_request(&address, head, false).await.unwrap();
        assert_eq!(response.headers()["content-length"], "99");
        assert!(response.body().is_end_stream());
        assert_eq!(
            pool::idle_count(&address),
            1,
            "back in the pool without a read"
        );

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
        assert_eq!(pool::idle_count(&address), 1);

        let response = client
            .send_request(&address, get("/"), false)
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_10);
        assert_eq!(body_of(response).await.unwrap(), "until the end");
        assert_eq!(
            pool::idle_count(&address),
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
            assert_eq!(pool::idle_count(&address), 0);
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
        assert_eq!(pool::idle_count(&address), 1);
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
        assert_eq!(pool::idle_count(&address), 0);
    }
}
