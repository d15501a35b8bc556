//! A connection to a server: writing a request (its body streamed when it must be), reading the
//! response head.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::net::TcpStream;

use super::{
    BodyMismatch, BoxError, COPY_BODY_UP_TO, MAX_HEAD, Payload, ProxyBody, READ_SIZE, invalid,
};
use crate::wire;
use crate::wire::head::{ResponseFraming, ResponseHead};

pub(super) enum WriteError {
    /// Nothing was written.
    NotSent(io::Error),
    /// Part of the request was written.
    Io(io::Error),
    /// The client's body failed.
    Body(BoxError),
}

pub(super) enum ReadError {
    /// The server closed the connection (or reset it) before a byte of its answer.
    ClosedUnanswered(io::Error),
    Io(io::Error),
}

/// The client's body did not match what it announced: its fault, not the server's.
fn broken_body(what: &'static str) -> WriteError {
    WriteError::Body(Box::new(BodyMismatch(what)))
}

/// A connection to a server, with what has been read from it and not yet used.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) buf: BytesMut,
}

impl Conn {
    /// Writes the request. `Ok(true)` when the server answered before the body was all sent (the
    /// rest is not sent, and the connection cannot be used again).
    pub(super) async fn write_request(
        &mut self,
        head: &[u8],
        payload: &mut Payload,
    ) -> Result<bool, WriteError> {
        let mut written = 0;
        let outcome = match payload {
            Payload::Whole(bytes) if bytes.len() > COPY_BODY_UP_TO => {
                let mut slices = [IoSlice::new(head), IoSlice::new(bytes)];
                write_all(&self.stream, &mut &mut slices[..], &mut written).await
            }
            // The head holds a small body already.
            _ => {
                write_all(
                    &self.stream,
                    &mut &mut [IoSlice::new(head)][..],
                    &mut written,
                )
                .await
            }
        };
        match outcome {
            Ok(()) => {}
            Err(error) if written == 0 => return Err(WriteError::NotSent(error)),
            Err(error) => return Err(WriteError::Io(error)),
        }
        match payload {
            Payload::Whole(_) => Ok(false),
            // Boxed: streaming is for large bodies; boxing keeps every request's future small.
            Payload::Stream(body) => Box::pin(self.write_stream(body, written)).await,
        }
    }

    /// Sends a streamed body after its head (`written` bytes so far). `Ok(true)` when the server
    /// answered before the body was all sent.
    async fn write_stream(
        &mut self,
        body: &mut ProxyBody,
        mut written: usize,
    ) -> Result<bool, WriteError> {
        let mut declared = body.size_hint().exact();
        let chunked = declared.is_none();
        loop {
            let frame = tokio::select! {
                biased;
                answered = answered(&self.stream, &mut self.buf) => match answered {
                    Ok(true) => return Ok(true),
                    Ok(false) => continue,
                    Err(error) => return Err(WriteError::Io(error)),
                },
                frame = body.frame() => frame,
            };
            let data = match frame {
                None => break,
                Some(Err(error)) => return Err(WriteError::Body(error)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => data,
                    // Trailers are not passed on.
                    Err(_) => continue,
                },
            };
            if let Some(left) = &mut declared {
                *left = left.checked_sub(data.len() as u64).ok_or_else(|| {
                    broken_body("the request body is longer than its Content-Length")
                })?;
            }
            let mut size_line = [0u8; 18];
            let (size_line, crlf): (&[u8], &[u8]) = if chunked {
                (wire::chunk_size_line(data.len(), &mut size_line), b"\r\n")
            } else {
                (b"", b"")
            };
            let mut slices = [
                IoSlice::new(size_line),
                IoSlice::new(&data),
                IoSlice::new(crlf),
            ];
            let mut slices = &mut slices[..];
            // Until this piece is written, or the server answers.
            loop {
                tokio::select! {
                    biased;
                    answered = answered(&self.stream, &mut self.buf) => match answered {
                        Ok(true) => return Ok(true),
                        Ok(false) => {}
                        Err(error) => return Err(WriteError::Io(error)),
                    },
                    sent = write_all(&self.stream, &mut slices, &mut written) => {
                        sent.map_err(WriteError::Io)?;
                        break;
                    }
                }
            }
        }
        if declared.is_some_and(|left| left > 0) {
            return Err(broken_body(
                "the request body ended before its Content-Length",
            ));
        }
        if chunked {
            let mut last = [IoSlice::new(b"0\r\n\r\n")];
            write_all(&self.stream, &mut &mut last[..], &mut written)
                .await
                .map_err(WriteError::Io)?;
        }
        Ok(false)
    }

    /// Reads more from the server into the buffer; `Ok(0)` at its end.
    pub(super) fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }

    /// Reads the response head, skipping interim (1xx) responses: the head, how the body is
    /// framed, and whether the connection may be used again after it.
    pub(super) async fn read_head(
        &mut self,
        head_only: bool,
    ) -> Result<(http::response::Parts, ResponseFraming, bool), ReadError> {
        let mut received = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                let parsed = wire::head::parse_response(&mut self.buf, head_only, MAX_HEAD)
                    .map_err(|e| ReadError::Io(invalid(e.0)))?;
                match parsed {
                    ResponseHead::Complete(parts, framing, keep_alive) => {
                        return Ok((parts, framing, keep_alive));
                    }
                    ResponseHead::Interim => continue,
                    ResponseHead::Partial => {}
                }
            }
            let read = std::future::poll_fn(|cx| self.poll_read_more(cx)).await;
            match read {
                Ok(0) | Err(_) if !received => {
                    let error = read.err().unwrap_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection without answering",
                        )
                    });
                    return Err(ReadError::ClosedUnanswered(error));
                }
                Ok(0) => {
                    return Err(ReadError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection in the middle of the response head",
                    )));
                }
                Ok(_) => received = true,
                Err(error) => return Err(ReadError::Io(error)),
            }
        }
    }
}

/// Resolves when the server has sent something (`true`, the bytes in `buf`), or when the socket
/// was only said to be readable (`false`); fails when the server closed the connection.
async fn answered(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    stream.readable().await?;
    buf.reserve(READ_SIZE);
    match stream.try_read_buf(buf) {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the server closed the connection while the request was being sent",
        )),
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(error) => Err(error),
    }
}

/// Writes all of `slices`, taking what is written off them (so that a write cancelled between
/// two system calls can go on where it stopped), and counting it into `written`.
async fn write_all(
    stream: &TcpStream,
    slices: &mut &mut [IoSlice<'_>],
    written: &mut usize,
) -> io::Result<()> {
    IoSlice::advance_slices(slices, 0);
    while !slices.is_empty() {
        match stream.try_write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *written += n;
                IoSlice::advance_slices(slices, n);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
