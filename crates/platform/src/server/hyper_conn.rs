//! Connections served by hyper (HTTP/1 for the services, HTTP/2 for everyone), kept within
//! bounds that hyper does not set itself.
//!
//! hyper's HTTP/1 server times the reading of a request head, and its HTTP/2 server nothing at
//! all: a client that completes the preface and then stays silent, or opens no stream, holds the
//! connection for ever. Here every connection is watched ([`supervise`]) for:
//! - no request within the first-request timeout, or none for the idle timeout after the last
//!   one ended: the connection is shut down gracefully (HTTP/2: GOAWAY), then closed if it does
//!   not go within a second;
//! - an answer that the client has stopped taking (its body has a frame out and is not asked
//!   for the next) with no progress on the connection for the send timeout: closed. A request
//!   waiting on its handler, or a body waiting for data, is not the client's doing and is left
//!   to the handler's own timeouts;
//! - recycling at the listener's cap (when no request is in flight), draining, and closing at
//!   the end of the drain timeout.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tower::Service;

use super::listener::Control;

/// The time bounds of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A connection must start its first request within this time.
    pub first_request: Duration,
    /// A connection with no request in flight is closed after this time.
    pub idle: Duration,
    /// A client must take more of an answer within this time.
    pub send: Duration,
}

/// A service as hyper's connections call it: any body in, any body out.
pub trait ConnService<B>:
    Service<Request<axum::body::Body>, Response = Response<B>, Error = Infallible>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> ConnService<B> for S where
    S: Service<Request<axum::body::Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static
{
}

/// Serves an HTTP/2 connection on `io` (the preface included) until it ends.
pub async fn serve_h2<I, S, B>(
    io: I,
    peer: SocketAddr,
    service: S,
    max_header_list_size: u32,
    timeouts: Timeouts,
    control: &Control,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService<B>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new(control));
    let service = Watched {
        inner: service,
        activity: Arc::clone(&activity),
        peer,
    };
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(max_header_list_size)
        .enable_connect_protocol()
        .serve_connection(
            TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(service),
        );
    supervise(connection, &activity, timeouts, control).await
}

/// Serves an HTTP/1 connection on `io` with hyper (upgrades allowed) until it ends.
pub async fn serve_http1<I, S, B>(
    io: I,
    peer: SocketAddr,
    service: S,
    max_header_size: usize,
    timeouts: Timeouts,
    control: &Control,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService<B>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new(control));
    let service = Watched {
        inner: service,
        activity: Arc::clone(&activity),
        peer,
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.first_request.min(timeouts.idle))
        // hyper answers 431 when a request head does not fit the read buffer.
        .max_buf_size(max_header_size.max(8192))
        .serve_connection(
            TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(service),
        )
        .with_upgrades();
    supervise(connection, &activity, timeouts, control).await
}

/// A connection whose end can be asked for.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// How long a connection asked to end gracefully may take before it is closed.
const GRACE: Duration = Duration::from_secs(1);

/// Runs `connection` within `timeouts` and the listener's wishes (see the module docs).
async fn supervise<C: Graceful>(
    connection: C,
    activity: &Activity,
    timeouts: Timeouts,
    control: &Control,
) -> Result<(), hyper::Error> {
    let mut connection = std::pin::pin!(connection);
    let tick = (timeouts.first_request.min(timeouts.idle).min(timeouts.send) / 4)
        .clamp(Duration::from_millis(25), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recycled = std::pin::pin!(control.recycled());
    let mut draining = std::pin::pin!(control.draining());
    let mut closing = std::pin::pin!(control.closing());
    // Once a graceful end is asked for: when to stop waiting for it.
    let mut ending: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            served = connection.as_mut() => return served,
            () = &mut closing => return Ok(()),
            // Draining lets requests in flight finish, within the drain timeout (`closing`).
            () = &mut draining, if ending.is_none() => {
                connection.as_mut().graceful_shutdown();
                ending = Some(tokio::time::Instant::now() + Duration::from_secs(u32::MAX.into()));
            }
            () = &mut recycled, if ending.is_none() => {
                connection.as_mut().graceful_shutdown();
                ending = Some(tokio::time::Instant::now() + GRACE);
            }
            _ = ticks.tick() => {
                if ending.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    return Ok(());
                }
                let quiet = Duration::from_millis(
                    super::clock::millis().saturating_sub(activity.last.load(Ordering::Relaxed)),
                );
                if activity.active.load(Ordering::Acquire) > 0 {
                    if activity.blocked.load(Ordering::Acquire) > 0 && quiet >= timeouts.send {
                        tracing::debug!(?quiet, "the client takes nothing of its answers; closing");
                        return Ok(());
                    }
                } else if ending.is_none() {
                    let limit = if activity.served.load(Ordering::Relaxed) {
                        timeouts.idle
                    } else {
                        timeouts.first_request
                    };
                    if quiet >= limit {
                        connection.as_mut().graceful_shutdown();
                        ending = Some(tokio::time::Instant::now() + GRACE);
                    }
                }
            }
        }
    }
}

/// What a connection's requests are doing.
struct Activity {
    /// Requests in flight (until their response body ends or is dropped).
    active: AtomicUsize,
    /// The coarse clock's milliseconds at the latest progress: a request beginning or ending, a
    /// body frame either way.
    last: AtomicU64,
    /// Whether any request has begun.
    served: AtomicBool,
    /// Answers whose body has handed out a frame and not been asked for the next: waiting on
    /// the client.
    blocked: AtomicUsize,
    presence: super::listener::Presence,
}

impl Activity {
    fn new(control: &Control) -> Self {
        Activity {
            active: AtomicUsize::new(0),
            last: AtomicU64::new(super::clock::millis()),
            served: AtomicBool::new(false),
            blocked: AtomicUsize::new(0),
            presence: control.presence(),
        }
    }

    fn progress(&self) {
        self.last.store(super::clock::millis(), Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.served.store(true, Ordering::Relaxed);
        if self.active.fetch_add(1, Ordering::AcqRel) == 0 {
            // A recycled connection is about to close; its request goes with it.
            let _ = self.presence.busy();
        }
        self.progress();
        InFlight(Arc::clone(self))
    }
}

/// A request in flight, until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.progress();
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.presence.waiting();
        }
    }
}

/// A service whose requests are counted and watched for progress, with the peer's address in
/// their extensions.
#[derive(Clone)]
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl<S, B> Service<Request<Incoming>> for Watched<S>
where
    S: Service<Request<axum::body::Body>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Progress<B>>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<Progress<B>>, Infallible>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let activity = Arc::clone(&self.activity);
        let mut request = request.map(|body| {
            axum::body::Body::new(Progress {
                inner: body,
                activity: Arc::clone(&activity),
                in_flight: None,
                handed_out: false,
            })
        });
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|inner| Progress {
                inner,
                activity,
                in_flight: Some(in_flight),
                handed_out: false,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A body whose frames count as progress; a response's also keeps its request in flight,
    /// and counts as blocked on the client between handing out a frame and being asked for the
    /// next.
    struct Progress<B> {
        #[pin]
        inner: B,
        activity: Arc<Activity>,
        in_flight: Option<InFlight>,
        handed_out: bool,
    }

    impl<B> PinnedDrop for Progress<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.handed_out {
                this.activity.blocked.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl<B: Body> Body for Progress<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if std::mem::take(this.handed_out) {
            this.activity.blocked.fetch_sub(1, Ordering::AcqRel);
        }
        let frame = this.inner.poll_frame(cx);
        if frame.is_ready() {
            this.activity.progress();
        }
        if this.in_flight.is_some() && matches!(frame, Poll::Ready(Some(Ok(_)))) {
            *this.handed_out = true;
            this.activity.blocked.fetch_add(1, Ordering::AcqRel);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
