//! Telling HTTP/2 with prior knowledge from HTTP/1 on a cleartext connection, within a deadline.
//!
//! hyper-util's automatic server reads the first bytes to decide, but with no time limit: a
//! client that sends nothing, or part of HTTP/2's preface (`PRI * HTTP/2.0\r\n`), holds the
//! connection for ever. Here the decision must come within the header read timeout; the bytes
//! read to make it are handed on ([`Prefixed`]) to whichever protocol serves the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What every HTTP/2 connection starts with (RFC 9113 section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Reads from `io` into `buf` until the protocol is known: HTTP/2 once the whole preface is in,
/// HTTP/1 as soon as the bytes cannot be the preface. `None` when the client closed or sent too
/// little within `timeout`.
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    timeout: Duration,
) -> io::Result<Option<Protocol>> {
    let deciding = async {
        loop {
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] != H2_PREFACE[..n] {
                return Ok(Some(Protocol::Http1));
            }
            if n == H2_PREFACE.len() {
                return Ok(Some(Protocol::Http2));
            }
            buf.reserve(4096);
            if io.read_buf(buf).await? == 0 {
                return Ok(None);
            }
        }
    };
    match tokio::time::timeout(timeout, deciding).await {
        Ok(decided) => decided,
        Err(_) => Ok(None),
    }
}

/// An I/O stream whose first bytes to read were read already.
#[derive(Debug)]
pub struct Prefixed<T> {
    prefix: BytesMut,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: BytesMut, inner: T) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_preface_means_http2_anything_else_http1_and_silence_nothing() {
        for (sent, expected) in [
            (&b"GET / HTTP/1.1\r\n"[..], Some(Protocol::Http1)),
            (b"P", None),
            (b"PUT", Some(Protocol::Http1)),
            (b"PRI * HTTP/2.0\r\n", None),
            (H2_PREFACE, Some(Protocol::Http2)),
            (b"", None),
        ] {
            let (mut client, mut server) = tokio::io::duplex(1024);
            client.write_all(sent).await.unwrap();
            let mut buf = BytesMut::new();
            let got = detect(&mut server, &mut buf, Duration::from_millis(100))
                .await
                .unwrap();
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(sent));
            if expected.is_some() {
                // What was read is read again first.
                let mut again = Prefixed::new(buf, server);
                let mut first = vec![0u8; sent.len()];
                again.read_exact(&mut first).await.unwrap();
                assert_eq!(first, sent);
            }
        }
    }
}
