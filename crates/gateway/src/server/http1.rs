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

mod reading;
mod respond;

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::extract::ConnectInfo;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use platform::server::listener::Control;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::request_body;
use super::tunnel::{self, UpstreamUpgrade};
use super::zero_copy::ZeroCopy;
use crate::wire::{self, BodyFraming, ChunkedDecoder, HeadError, RequestHead};
use reading::{Event, Framing, Pump, Reading};
use respond::{respond, with_date, write_all};

/// A service as this loop calls it: one request at a time, its future awaited inside the
/// connection's own task (a tower service's future has to be a type of its own, so an `async`
/// handler's is boxed: allocated and copied on every request; `proxy::tests` keeps its size in check).
pub(crate) trait LeanService: Send + 'static {
    /// The response body.
    type Body: Body<Data = Bytes> + Send + 'static;

    fn call_lean(
        &mut self,
        request: Request<axum::body::Body>,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

impl<H: platform::Handler> LeanService for platform::RequestLayers<H> {
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
    let mut deadline = crate::coarse_timer::CoarseSleep::after(limits.header_read_timeout);
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
    // Room for the request id, which the contract's layers add when the client sent none, so the
    // map is not regrown for it.
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

#[cfg(test)]
mod tests;
