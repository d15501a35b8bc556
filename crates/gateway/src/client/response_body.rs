//! A response body from upstream, read straight from its connection; its end puts the
//! connection back in the pool.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::conn::Conn;
use super::{BoxError, MAX_HEAD, invalid, pool};
use crate::wire::head::ResponseFraming;
use crate::wire::{ChunkedDecoder, Decoded};

/// How much of a response body is left, and how it ends.
#[derive(Debug)]
pub(super) enum Framing {
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
    pub(super) fn of(framing: ResponseFraming) -> Self {
        match framing {
            ResponseFraming::Length(length) => Framing::Length(length),
            ResponseFraming::Chunked => Framing::Chunked(ChunkedDecoder::new(MAX_HEAD)),
            ResponseFraming::Close => Framing::Close,
        }
    }

    pub(super) fn ended(&self) -> bool {
        matches!(self, Framing::Done | Framing::Length(0))
    }
}

/// A response body from upstream. Its end puts the connection back in the pool; dropped before
/// its end, it closes the connection.
pub(crate) struct UpstreamBody(pub(super) Inner);

pub(super) enum Inner {
    Raw(RawBody),
    /// An upgrade's response (through hyper).
    Hyper(Incoming),
}

pub(super) struct RawBody {
    /// `None` once the body has ended.
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    address: Arc<str>,
    idle_timeout: Duration,
    /// Longest wait for the next bytes of the body.
    read_timeout: Duration,
    /// While waiting for bytes: when the wait fails.
    deadline: Option<crate::coarse_timer::CoarseSleep>,
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
    pub(super) fn raw(
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
            pool::checkin(&self.address, conn, self.idle_timeout);
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
                        crate::coarse_timer::CoarseSleep::after(read_timeout)
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
/// tests (the `fuzzing` module).
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
