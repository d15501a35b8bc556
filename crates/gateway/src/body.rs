//! Bodies on their way through: the client's request body (kept when small, so a request can be
//! retried; streamed otherwise) and the upstream's response body (streamed, counting the request
//! as in flight on its server until the body ends).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, StreamBody};
use tower_http::timeout::TimeoutBody;

use crate::client::{BoxError, Payload, ProxyBody};
use crate::proxy::InFlight;

/// An error reading the client's request body, told apart from upstream errors when it comes
/// back through the client library.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    #[error("the client sent nothing for longer than the client body timeout")]
    Timeout,
    #[error("the request body is larger than the route allows")]
    TooLarge,
    #[error("the request body ended early: {0}")]
    Broken(BoxError),
}

impl ClientBodyError {
    fn from_box(error: BoxError) -> Self {
        if error.is::<tower_http::timeout::TimeoutError>() {
            ClientBodyError::Timeout
        } else if over_limit(&*error) {
            ClientBodyError::TooLarge
        } else {
            ClientBodyError::Broken(error)
        }
    }

    /// Finds a client body error in a chain of causes.
    pub(crate) fn find<'a>(
        error: &'a (dyn std::error::Error + 'static),
    ) -> Option<&'a ClientBodyError> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(found) = error.downcast_ref::<ClientBodyError>() {
                return Some(found);
            }
            current = error.source();
        }
        None
    }
}

/// Whether `error`, or an error it wraps, is the body limit's.
fn over_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// The request body, ready to send once or many times.
pub(crate) enum RequestBody {
    /// Whole and small: can be sent again on a retry.
    Replayable(Bytes),
    /// Too large, or of unknown size and still coming: sent once.
    Streaming(ProxyBody),
}

impl RequestBody {
    /// Reads up to `limit` bytes; a body that ends within it becomes replayable. `idle` bounds the
    /// pause between two reads; a body over `max` bytes fails with [`ClientBodyError::TooLarge`].
    pub(crate) async fn prepare(
        body: Body,
        limit: usize,
        idle: Duration,
        max: Option<u64>,
    ) -> Result<Self, ClientBodyError> {
        let body = match max {
            Some(max) => Body::new(http_body_util::Limited::new(
                body,
                usize::try_from(max).unwrap_or(usize::MAX),
            )),
            None => body,
        };
        let hint = body.size_hint();
        if hint.exact() == Some(0) {
            return Ok(RequestBody::Replayable(Bytes::new()));
        }
        let mut body = TimeoutBody::new(idle, body)
            .map_err(|e| BoxError::from(ClientBodyError::from_box(e)))
            .boxed_unsync();
        if hint.lower() > limit as u64 {
            return Ok(RequestBody::Streaming(body));
        }
        let mut buffered = BytesMut::new();
        loop {
            match body.frame().await {
                None => return Ok(RequestBody::Replayable(buffered.freeze())),
                Some(Err(error)) => {
                    return Err(match error.downcast::<ClientBodyError>() {
                        Ok(error) => *error,
                        Err(other) => ClientBodyError::Broken(other),
                    });
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        buffered.extend_from_slice(&data);
                        if buffered.len() > limit {
                            // Too big to keep: send what came so far, then the rest as it comes.
                            let head = futures_util::stream::once(async move {
                                Ok::<_, BoxError>(Frame::data(buffered.freeze()))
                            });
                            let rest = http_body_util::BodyStream::new(body);
                            use futures_util::StreamExt;
                            let stream = StreamBody::new(head.chain(rest));
                            return Ok(RequestBody::Streaming(stream.boxed_unsync()));
                        }
                    }
                    // Trailers end a chunked body; they are not replayed.
                    Err(_trailers) => return Ok(RequestBody::Replayable(buffered.freeze())),
                },
            }
        }
    }

    /// The body for one attempt, and whether another attempt could send it again.
    pub(crate) fn take(&mut self) -> (Payload, bool) {
        match self {
            RequestBody::Replayable(bytes) => (Payload::Whole(bytes.clone()), true),
            // Whatever happens to this attempt, the body cannot be sent a second time.
            RequestBody::Streaming(body) => {
                (Payload::Stream(std::mem::replace(body, empty())), false)
            }
        }
    }
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A response body that keeps its request counted on its server until it ends or is dropped.
pub(crate) struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
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
