//! The HTTP/1.1 client the gateway talks to upstream servers with.
//!
//! Keep-alive connections wait in a pool per worker thread and server address. A connection has no
//! task of its own: the request using it drives it (writing the request, reading the response
//! head, then the body through [`UpstreamBody`]), and the end of the body puts it back in the pool.
//! A connection with a task of its own costs two task hand-offs, a channel and a lock per request;
//! a connection driven in place costs none. An idle connection is checked before reuse (one the
//! server has closed is dropped), and a request that a pooled connection could not send at all is
//! sent on a new connection. Idle connections are closed after the upstream's `idle_timeout`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way upstream: replayed bytes, or the client's stream.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

type Sender = http1::SendRequest<ProxyBody>;
type Connection = http1::Connection<TokioIo<TcpStream>, ProxyBody>;

/// Idle connections kept per server address on one thread at most.
const MAX_IDLE_PER_SERVER: usize = 1024;

/// How often a thread's idle connections are checked for being closed or expired, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Connects to upstream servers and sends them requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client {
    connect_timeout: Duration,
    idle_timeout: Duration,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// The connection failed before any of the request was written.
    #[error("connection failed before the request was sent: {0}")]
    NotSent(hyper::Error),
    /// The connection failed after (some of) the request was written.
    #[error(transparent)]
    Http(hyper::Error),
}

impl SendError {
    /// Whether the server cannot have seen the request, so that sending it elsewhere is safe
    /// whatever its method.
    pub(crate) fn never_sent(&self) -> bool {
        !matches!(self, SendError::Http(_))
    }

    /// The HTTP error, if any: the error of a request body breaks the exchange from within.
    pub(crate) fn http(&self) -> Option<&hyper::Error> {
        match self {
            SendError::NotSent(error) | SendError::Http(error) => Some(error),
            _ => None,
        }
    }
}

impl Client {
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Client {
            connect_timeout,
            idle_timeout,
        }
    }

    /// Sends `request` (its URI in origin form, with a `Host` header) to the server at `address`,
    /// on a pooled connection when one is idle. With `upgrade`, the connection is new and
    /// dedicated, so that the response can switch protocols.
    pub(crate) async fn send(
        &self,
        address: &Arc<str>,
        mut request: Request<ProxyBody>,
        upgrade: bool,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if upgrade {
            return self.send_upgradable(address, request).await;
        }
        loop {
            let (pooled, (mut sender, connection)) = match checkout(address) {
                Some(idle) => (true, idle),
                None => (false, self.connect(address).await?),
            };
            let mut connection = Some(connection);
            let exchange = sender.try_send_request(request);
            match drive(exchange, &mut connection).await {
                Ok(response) => {
                    return Ok(response.map(|body| UpstreamBody {
                        body,
                        connection,
                        sender: Some(sender),
                        address: Arc::clone(address),
                        idle_timeout: self.idle_timeout,
                    }));
                }
                Err(mut error) => match error.take_message() {
                    // The server closed the idle connection as the request went out: any request
                    // may go again, on a new connection.
                    Some(unsent) if pooled => request = unsent,
                    Some(_) => return Err(SendError::NotSent(error.into_error())),
                    None => return Err(SendError::Http(error.into_error())),
                },
            }
        }
    }

    async fn send_upgradable(
        &self,
        address: &Arc<str>,
        request: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (mut sender, connection) = self.connect(address).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(SendError::Http)?;
        Ok(response.map(|body| UpstreamBody {
            body,
            connection: None,
            sender: None,
            address: Arc::clone(address),
            idle_timeout: self.idle_timeout,
        }))
    }

    async fn connect(&self, address: &str) -> Result<(Sender, Connection), SendError> {
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
        http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::NotSent)
    }
}

/// Runs `exchange` while driving `connection`; a connection that ends is dropped (set to `None`),
/// which also ends its response body.
async fn drive<F: Future>(exchange: F, connection: &mut Option<Connection>) -> F::Output {
    let mut exchange = pin!(exchange);
    poll_fn(|cx| {
        poll_connection(connection, cx);
        exchange.as_mut().poll(cx)
    })
    .await
}

/// Polls the connection; drops it once it has ended.
fn poll_connection(connection: &mut Option<Connection>, cx: &mut Context<'_>) {
    if let Some(conn) = connection
        && let Poll::Ready(outcome) = Pin::new(conn).poll(cx)
    {
        if let Err(error) = outcome {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
        *connection = None;
    }
}

/// A response body from upstream. Reading it drives its connection; once it has ended, the
/// connection goes back to the pool. Dropped before its end, it closes the connection.
pub(crate) struct UpstreamBody {
    body: Incoming,
    connection: Option<Connection>,
    sender: Option<Sender>,
    address: Arc<str>,
    idle_timeout: Duration,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("address", &self.address)
            .field("pooled", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// The body has ended: lets the connection finish the exchange and keeps it for the next one.
    fn release(&mut self, cx: &mut Context<'_>) {
        poll_connection(&mut self.connection, cx);
        if let (Some(sender), Some(connection)) = (self.sender.take(), self.connection.take()) {
            checkin(&self.address, sender, connection, self.idle_timeout);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let mut frame = Pin::new(&mut this.body).poll_frame(cx);
        if frame.is_pending() && this.connection.is_some() {
            // Reading more of the body is the connection's job.
            poll_connection(&mut this.connection, cx);
            frame = Pin::new(&mut this.body).poll_frame(cx);
        }
        match &frame {
            Poll::Ready(None) => this.release(cx),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(cx),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An idle connection in the pool.
struct Idle {
    sender: Sender,
    connection: Connection,
    expires: Instant,
}

impl Idle {
    /// Whether the connection can take a request: the server has not closed it, and it is not
    /// in the middle of an exchange.
    fn usable(&mut self, now: Instant) -> bool {
        if now >= self.expires {
            return false;
        }
        // Polling without a waker only looks: an end of file or stray bytes from the server
        // end the connection.
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut self.connection).poll(&mut cx) {
            Poll::Ready(_) => false,
            Poll::Pending => self.sender.is_ready(),
        }
    }
}

thread_local! {
    static POOL: RefCell<HashMap<Arc<str>, Vec<Idle>>> = RefCell::new(HashMap::new());
    static LAST_SWEEP: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The most recently used idle connection to `address` that is still usable.
fn checkout(address: &str) -> Option<(Sender, Connection)> {
    let now = Instant::now();
    POOL.with_borrow_mut(|pool| {
        let idle = pool.get_mut(address)?;
        while let Some(mut candidate) = idle.pop() {
            if candidate.usable(now) {
                return Some((candidate.sender, candidate.connection));
            }
        }
        None
    })
}

fn checkin(address: &Arc<str>, sender: Sender, connection: Connection, idle_timeout: Duration) {
    if sender.is_closed() {
        return;
    }
    let now = Instant::now();
    POOL.with_borrow_mut(|pool| {
        let idle = pool.entry(Arc::clone(address)).or_default();
        if idle.len() < MAX_IDLE_PER_SERVER {
            idle.push(Idle {
                sender,
                connection,
                expires: now + idle_timeout,
            });
        }
    });
    if LAST_SWEEP
        .get()
        .is_none_or(|last| now - last >= SWEEP_EVERY)
    {
        LAST_SWEEP.set(Some(now));
        sweep();
    }
}

/// Closes this thread's idle connections that have expired or that their server has closed.
pub(crate) fn sweep() {
    let now = Instant::now();
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
    use http_body_util::{BodyExt, Empty};

    fn get(path: &str) -> Request<ProxyBody> {
        Request::get(path)
            .header(http::header::HOST, "test")
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .unwrap()
    }

    async fn echo_server() -> (Arc<str>, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_is_reused_once_its_body_has_been_read() {
        let (address, _stop) = echo_server().await;
        let client = Client::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..5 {
            let response = client.send(&address, get("/"), false).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(body.starts_with(b"pooled"), "{body:?}");
            assert_eq!(idle_count(&address), 1, "one connection, back in the pool");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_dropped_before_its_end_does_not_return_its_connection() {
        let (address, _stop) = echo_server().await;
        let client = Client::new(Duration::from_secs(1), Duration::from_secs(60));
        let response = client.send(&address, get("/"), false).await.unwrap();
        drop(response);
        assert_eq!(idle_count(&address), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_server_closed_is_not_used_again() {
        let (address, stop) = echo_server().await;
        let client = Client::new(Duration::from_secs(1), Duration::from_secs(60));
        let response = client.send(&address, get("/"), false).await.unwrap();
        response.into_body().collect().await.unwrap();
        assert_eq!(idle_count(&address), 1);
        // The server shuts down (closing its idle keep-alive connections) and another takes
        // its port.
        stop.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&*address).await.is_ok() {
            assert!(Instant::now() < deadline, "the server did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let error = client.send(&address, get("/"), false).await.unwrap_err();
        assert!(error.never_sent(), "{error}");
        assert!(matches!(error, SendError::Connect(_)), "{error}");
        assert_eq!(idle_count(&address), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn expired_connections_are_swept() {
        let (address, _stop) = echo_server().await;
        let client = Client::new(Duration::from_secs(1), Duration::from_millis(1));
        let response = client.send(&address, get("/"), false).await.unwrap();
        response.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        sweep();
        assert_eq!(idle_count(&address), 0);
    }
}
