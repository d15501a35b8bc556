//! The client's side of a connection while a request is handled: the request body passed on
//! as the handler asks for it, or a read kept open to notice a client that hangs up.

use std::io::IoSlice;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::respond::write_all;
use crate::server::request_body::{self, Piece};
use crate::wire::{ChunkedDecoder, Decoded};

/// Bytes read ahead of the handler (pipelined requests) at most while a request is handled.
const READ_AHEAD: usize = 64 * 1024;

/// The client's side of the connection while a request is handled.
pub(super) enum Reading {
    /// No body (or all of it was in hand): only watching for the client to hang up.
    None,
    Body(Pump),
    /// The body has ended.
    Done,
    /// The body cannot be read on (the handler dropped it, or it was malformed): nothing more is
    /// read, and the connection closes after the response.
    Stopped,
}

/// Passes a request body from the client to the handler.
pub(super) struct Pump {
    pub(super) sender: request_body::Sender,
    pub(super) framing: Framing,
}

pub(super) enum Framing {
    /// This many bytes to go.
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// What one step of [`Reading::advance`] came to.
pub(super) enum Event {
    Progress,
    ClientGone,
}

impl Reading {
    pub(super) fn finished(&self) -> bool {
        matches!(self, Reading::None | Reading::Done)
    }

    /// Does one step of reading: passes a piece of the body on, or reads ahead (pipelined
    /// requests) to notice a client that hangs up. Never resolves once there is nothing to do.
    pub(super) async fn advance<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        buf: &mut BytesMut,
        send_timeout: Duration,
    ) -> Event {
        let pump = match self {
            Reading::Body(pump) => pump,
            Reading::None | Reading::Done if buf.len() < READ_AHEAD => {
                buf.reserve(4096);
                return match io.read_buf(buf).await {
                    Ok(0) | Err(_) => Event::ClientGone,
                    Ok(_) => Event::Progress,
                };
            }
            _ => return std::future::pending().await,
        };
        if let Some(wanted) = pump.sender.wanted.take() {
            if wanted.await.is_err() {
                // The handler dropped the body unread.
                *self = Reading::Stopped;
                return Event::Progress;
            }
            let mut continuing = [IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n")];
            if write_all(io, &mut continuing, send_timeout).await.is_err() {
                return Event::ClientGone;
            }
        }
        let Ok(permit) = pump.sender.pieces.reserve().await else {
            // The handler dropped the body before its end.
            *self = Reading::Stopped;
            return Event::Progress;
        };
        loop {
            let piece = match &mut pump.framing {
                Framing::Length(left) if !buf.is_empty() => {
                    let take = (*left).min(buf.len() as u64) as usize;
                    *left -= take as u64;
                    Some(Ok(Some(buf.split_to(take).freeze())))
                }
                Framing::Length(_) => None,
                Framing::Chunked(decoder) => match decoder.decode(buf) {
                    Ok(Decoded::Data(data)) => Some(Ok(Some(data))),
                    Ok(Decoded::End) => Some(Ok(None)),
                    Ok(Decoded::More) => None,
                    Err(error) => Some(Err(error)),
                },
            };
            match piece {
                Some(Ok(Some(data))) => {
                    permit.send(Piece::Data(data));
                    if matches!(pump.framing, Framing::Length(0)) {
                        // The body knows its length, and ends with its last byte.
                        *self = Reading::Done;
                    }
                    return Event::Progress;
                }
                Some(Ok(None)) => {
                    permit.send(Piece::End);
                    *self = Reading::Done;
                    return Event::Progress;
                }
                Some(Err(error)) => {
                    permit.send(Piece::Error(Box::new(error)));
                    *self = Reading::Stopped;
                    return Event::Progress;
                }
                None => {}
            }
            buf.reserve(16 * 1024);
            match io.read_buf(buf).await {
                Ok(0) | Err(_) => return Event::ClientGone,
                Ok(_) => {}
            }
        }
    }
}
