//! A request body that the connection loop reads from the client while the request is handled.
//!
//! The loop decodes the body's framing (`wire`) and passes the data through a channel of one
//! piece, so that it reads from the client only as fast as the handler takes the body. The body
//! ends only when the loop says so: a connection that goes away mid-body, or a loop that stops,
//! is an error, never a body that looks complete.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the loop passes on.
#[derive(Debug)]
pub(crate) enum Piece {
    Data(Bytes),
    End,
    Error(BoxError),
}

/// The handler's end.
#[derive(Debug)]
pub(crate) struct ChannelBody {
    pieces: mpsc::Receiver<Piece>,
    /// Told at the first read: the client is waiting for `100 Continue` before it sends.
    wanted: Option<oneshot::Sender<()>>,
    /// Bytes still to come, when the length is known.
    left: Option<u64>,
    ended: bool,
}

/// The loop's end.
#[derive(Debug)]
pub(crate) struct Sender {
    pub(crate) pieces: mpsc::Sender<Piece>,
    /// Resolves when the handler first reads the body (with `Expect: 100-continue`).
    pub(crate) wanted: Option<oneshot::Receiver<()>>,
}

/// A body of `length` bytes (unknown: chunked); `expect_continue` when the client waits to be
/// asked for it.
pub(crate) fn channel(length: Option<u64>, expect_continue: bool) -> (Sender, ChannelBody) {
    let (tx, rx) = mpsc::channel(1);
    let (wanted_tx, wanted_rx) = if expect_continue {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    (
        Sender {
            pieces: tx,
            wanted: wanted_rx,
        },
        ChannelBody {
            pieces: rx,
            wanted: wanted_tx,
            left: length,
            ended: false,
        },
    )
}

/// The client went away, or the connection broke, before the body ended.
#[derive(Debug, thiserror::Error)]
#[error("the connection ended before the request body did")]
pub(crate) struct Unfinished;

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // A body of known length ends with its last byte.
        if self.ended || self.left == Some(0) {
            return Poll::Ready(None);
        }
        if let Some(wanted) = self.wanted.take() {
            let _ = wanted.send(());
        }
        match ready!(self.pieces.poll_recv(cx)) {
            Some(Piece::Data(data)) => {
                if let Some(left) = &mut self.left {
                    *left = left.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Piece::End) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Some(Piece::Error(error)) => {
                self.ended = true;
                Poll::Ready(Some(Err(error)))
            }
            None => {
                self.ended = true;
                Poll::Ready(Some(Err(Box::new(Unfinished))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.left == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_ends_only_when_told_and_a_dropped_sender_is_an_error() {
        let (sender, body) = channel(Some(5), false);
        tokio::spawn(async move {
            sender.pieces.send(Piece::Data("hel".into())).await.unwrap();
            sender.pieces.send(Piece::Data("lo".into())).await.unwrap();
        });
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");

        let (sender, body) = channel(None, false);
        tokio::spawn(async move {
            sender
                .pieces
                .send(Piece::Data("partial".into()))
                .await
                .unwrap();
        });
        let error = body.collect().await.unwrap_err();
        assert!(error.is::<Unfinished>(), "{error}");
    }

    #[tokio::test]
    async fn the_first_read_says_the_body_is_wanted() {
        let (mut sender, mut body) = channel(Some(1), true);
        let mut wanted = sender.wanted.take().unwrap();
        assert!(wanted.try_recv().is_err(), "not before a read");
        let reading = tokio::spawn(async move { body.frame().await.map(|f| f.is_ok()) });
        wanted.await.unwrap();
        sender.pieces.send(Piece::Data("x".into())).await.unwrap();
        assert_eq!(reading.await.unwrap(), Some(true));
    }
}
