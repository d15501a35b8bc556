//! The upstream's response on its way to the client: small bodies whole, others streamed while
//! the request stays counted in flight on its server.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::InFlight;
use crate::client::UpstreamBody;
use crate::error::ProxyError;

/// Bodies up to this size with a known length are read whole before the response is passed on
/// (as nginx's proxy buffering does): the client then gets head and body in one write instead of
/// two, and the upstream connection is free for the next request sooner.
const BUFFER_RESPONSES_UP_TO: u64 = 16 * 1024;

/// Turns the upstream's response into the client's: small bodies whole, others streamed. A small
/// body that did not come with the head is handed back, to be read by [`collect_small`].
pub(super) fn pass_on(
    response: http::Response<UpstreamBody>,
    in_flight: InFlight,
) -> Result<Response, Box<Unread>> {
    use http_body::Body as _;
    let small = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|len| len <= BUFFER_RESPONSES_UP_TO);
    let (parts, mut body) = response.into_parts();
    if !small {
        return Ok(Response::from_parts(
            parts,
            Body::new(Tracked::new(body, in_flight)),
        ));
    }
    // Usually it came with the head.
    match body.take_whole() {
        Some(whole) => {
            drop(in_flight);
            Ok(Response::from_parts(parts, Body::from(whole)))
        }
        None => Err(Box::new((parts, body, in_flight))),
    }
}

/// A response whose small body has yet to arrive.
pub(super) type Unread = (http::response::Parts, UpstreamBody, InFlight);

/// Reads a body of known small length that is still arriving; an upstream that stalls it fails
/// the request like any broken body would.
pub(super) async fn collect_small((parts, body, in_flight): Unread) -> Response {
    match http_body_util::BodyExt::collect(body).await {
        Ok(collected) => {
            drop(in_flight);
            Response::from_parts(parts, Body::from(collected.to_bytes()))
        }
        Err(error) => ProxyError::BrokenResponse(error.to_string()).into_response(),
    }
}

/// A response body that keeps its request counted on its server until it ends or is dropped.
pub(super) struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, in_flight: InFlight) -> Self {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
