//! The client's request body on its way upstream: kept when small, so a request can be retried;
//! streamed otherwise; or, on a route with `request_buffering`, read whole before a server is
//! chosen (in memory, spilling to a temporary file past the retry buffer), so that a slow upload
//! holds no server connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, StreamBody};
use tokio::io::AsyncWriteExt;
use tower_http::timeout::TimeoutBody;

use crate::client::{BoxError, Payload, ProxyBody, SendError};
use crate::error::ProxyError;

/// Largest body a buffering route keeps when it sets no `max_body_size`.
pub(crate) const MAX_BUFFERED: u64 = 1 << 30;

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
    /// The temporary file of a buffered body failed (the gateway's fault, not the client's).
    #[error("temporary file: {0}")]
    Spill(io::Error),
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

/// When the client's request body is what broke an exchange: the answer for the client. A body
/// that failed while it was being sent is the client's fault whatever its cause; an exchange
/// through hyper's client (upgrades) is, only when one of ours is among the causes.
pub(crate) fn client_fault(error: &SendError, max: Option<u64>) -> Option<ProxyError> {
    let cause = error.body_error()?;
    let found = ClientBodyError::find(cause);
    if found.is_none() && !matches!(error, SendError::Body(_)) {
        return None;
    }
    Some(match found {
        Some(ClientBodyError::Timeout) => ProxyError::ClientBodyTimeout,
        Some(ClientBodyError::TooLarge) => ProxyError::BodyTooLarge(max.unwrap_or_default()),
        Some(ClientBodyError::Spill(cause)) => {
            ProxyError::Internal(format!("request buffering: {cause}"))
        }
        Some(ClientBodyError::Broken(_)) | None => ProxyError::ClientBodyBroken,
    })
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

/// How a request body is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Bodies up to this size are kept in memory (and can be sent again on a retry).
    pub(crate) keep: usize,
    /// Longest pause between two reads (the client body timeout).
    pub(crate) idle: Duration,
    /// Largest body (the route's `max_body_size`).
    pub(crate) max: Option<u64>,
}

/// The request body, ready to send once or many times.
pub(crate) enum RequestBody {
    /// Whole and small: can be sent again on a retry.
    Replayable(Bytes),
    /// Whole, in a temporary file (deleted when the last user lets go): can be sent again.
    Spilled(Arc<tempfile::NamedTempFile>, u64),
    /// Too large, or of unknown size and still coming: sent once.
    Streaming(ProxyBody),
}

/// The client's body under the route's limits: largest size and longest pause.
fn limited(body: Body, limits: BodyLimits) -> ProxyBody {
    let body = match limits.max {
        Some(max) => Body::new(http_body_util::Limited::new(
            body,
            usize::try_from(max).unwrap_or(usize::MAX),
        )),
        None => body,
    };
    TimeoutBody::new(limits.idle, body)
        .map_err(|e| BoxError::from(ClientBodyError::from_box(e)))
        .boxed_unsync()
}

/// The client body error carried by `error`.
fn body_error(error: BoxError) -> ClientBodyError {
    match error.downcast::<ClientBodyError>() {
        Ok(error) => *error,
        Err(other) => ClientBodyError::Broken(other),
    }
}

impl RequestBody {
    /// Reads up to `limits.keep` bytes; a body that ends within it becomes replayable, a longer
    /// one streams on as it comes.
    pub(crate) async fn prepare(body: Body, limits: BodyLimits) -> Result<Self, ClientBodyError> {
        let hint = body.size_hint();
        if hint.exact() == Some(0) {
            return Ok(RequestBody::Replayable(Bytes::new()));
        }
        let mut body = limited(body, limits);
        if hint.lower() > limits.keep as u64 {
            return Ok(RequestBody::Streaming(body));
        }
        let mut buffered = BytesMut::new();
        loop {
            match body.frame().await {
                None => return Ok(RequestBody::Replayable(buffered.freeze())),
                Some(Err(error)) => return Err(body_error(error)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        buffered.extend_from_slice(&data);
                        if buffered.len() > limits.keep {
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

    /// Reads the whole body before it is sent: in memory up to `limits.keep`, then in a
    /// temporary file; at most `limits.max` (or [`MAX_BUFFERED`]) bytes.
    pub(crate) async fn buffer(body: Body, limits: BodyLimits) -> Result<Self, ClientBodyError> {
        let limits = BodyLimits {
            max: Some(limits.max.unwrap_or(MAX_BUFFERED)),
            ..limits
        };
        let mut body = limited(body, limits);
        let mut memory = BytesMut::new();
        let mut file: Option<(tempfile::NamedTempFile, tokio::fs::File)> = None;
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(body_error)?.into_data() else {
                continue;
            };
            len += data.len() as u64;
            match &mut file {
                None if memory.len() + data.len() <= limits.keep => {
                    memory.extend_from_slice(&data);
                }
                None => {
                    let spilled = tempfile::NamedTempFile::new().map_err(ClientBodyError::Spill)?;
                    let mut writer = tokio::fs::File::from_std(
                        spilled.reopen().map_err(ClientBodyError::Spill)?,
                    );
                    writer
                        .write_all(&memory)
                        .await
                        .map_err(ClientBodyError::Spill)?;
                    writer
                        .write_all(&data)
                        .await
                        .map_err(ClientBodyError::Spill)?;
                    memory = BytesMut::new();
                    file = Some((spilled, writer));
                }
                Some((_, writer)) => writer
                    .write_all(&data)
                    .await
                    .map_err(ClientBodyError::Spill)?,
            }
        }
        match file {
            None => Ok(RequestBody::Replayable(memory.freeze())),
            Some((spilled, mut writer)) => {
                writer.flush().await.map_err(ClientBodyError::Spill)?;
                Ok(RequestBody::Spilled(Arc::new(spilled), len))
            }
        }
    }

    /// The body for one attempt, and whether another attempt could send it again.
    pub(crate) fn take(&mut self) -> Result<(Payload, bool), ProxyError> {
        Ok(match self {
            RequestBody::Replayable(bytes) => (Payload::Whole(bytes.clone()), true),
            RequestBody::Spilled(file, len) => {
                let reader = file
                    .reopen()
                    .map_err(|e| ProxyError::Internal(format!("request buffering: {e}")))?;
                let body = FileBody {
                    stream: tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(reader)),
                    left: *len,
                    _file: Arc::clone(file),
                };
                (Payload::Stream(body.boxed_unsync()), true)
            }
            // Whatever happens to this attempt, the body cannot be sent a second time.
            RequestBody::Streaming(body) => {
                (Payload::Stream(std::mem::replace(body, empty())), false)
            }
        })
    }
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A buffered body read back from its temporary file, of known length.
struct FileBody {
    stream: tokio_util::io::ReaderStream<tokio::fs::File>,
    left: u64,
    /// Keeps the file until every attempt is done with it.
    _file: Arc<tempfile::NamedTempFile>,
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use futures_util::Stream;
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut self.stream).poll_next(cx)) {
            Some(Ok(data)) => {
                self.left = self.left.saturating_sub(data.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            None => Poll::Ready(Some(Err(
                "the buffered request body is shorter than read".into()
            ))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(keep: usize, max: Option<u64>) -> BodyLimits {
        BodyLimits {
            keep,
            idle: Duration::from_secs(5),
            max,
        }
    }

    async fn read(payload: Payload) -> Bytes {
        match payload {
            Payload::Whole(bytes) => bytes,
            Payload::Stream(body) => body.collect().await.unwrap().to_bytes(),
        }
    }

    #[tokio::test]
    async fn a_buffered_body_past_memory_goes_to_a_file_and_can_be_sent_twice() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let stream = futures_util::stream::iter(
            data.chunks(7000)
                .map(|c| Ok::<_, io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let body = Body::from_stream(stream);
        let mut buffered = RequestBody::buffer(body, limits(10_000, None))
            .await
            .unwrap();
        let path = match &buffered {
            RequestBody::Spilled(file, len) => {
                assert_eq!(*len, 100_000);
                file.path().to_path_buf()
            }
            _ => panic!("spilled to a file"),
        };
        for _ in 0..2 {
            let (payload, replayable) = buffered.take().unwrap();
            assert!(replayable);
            assert_eq!(read(payload).await, data);
        }
        drop(buffered);
        assert!(!path.exists(), "the temporary file goes with the body");
    }

    #[tokio::test]
    async fn a_buffered_body_over_the_limit_is_refused_and_a_small_one_stays_in_memory() {
        let body = Body::from(vec![0u8; 5000]);
        assert!(matches!(
            RequestBody::buffer(body, limits(100, Some(4000))).await,
            Err(ClientBodyError::TooLarge)
        ));
        let body = Body::from("small");
        assert!(matches!(
            RequestBody::buffer(body, limits(100, None)).await,
            Ok(RequestBody::Replayable(bytes)) if bytes == "small"
        ));
    }
}
