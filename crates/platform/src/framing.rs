//! A guard in front of the HTTP/1 parser against request smuggling.
//!
//! A request with both `Transfer-Encoding` and `Content-Length` is the classic smuggling attempt:
//! a front end and a back end that disagree about which header frames the body see different
//! requests in the same bytes. RFC 9112 (section 6.3) lets a server either reject it or read it
//! as chunked and close the connection; hyper does the latter, dropping `Content-Length` before
//! the request reaches the service, so the service cannot answer 400 itself. This guard can: it
//! follows the framing of every request on the connection (heads, fixed-length and chunked
//! bodies) as the bytes go to hyper, and when a head carries both headers it damages the
//! `Content-Length` name in place, which makes hyper's parser reject the head with 400 and close
//! the connection.
//!
//! The guard parses heads with the same parser and settings as hyper (httparse, defaults), so the
//! two agree on where every request starts. Whatever it does not understand it hands to hyper
//! unchanged and stops looking at the connection: HTTP/2 (whose preface is not an HTTP/1 head),
//! a head hyper will reject anyway, and the bytes after a request that may switch protocols
//! (`Upgrade`, `CONNECT`). A head split across reads is held back until it is complete, up to
//! [`MAX_HEAD`]; a longer one is passed on for hyper to answer 431.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Heads longer than this are not held back (hyper refuses heads over its buffer size anyway).
pub const MAX_HEAD: usize = 128 * 1024;

/// hyper's limit on the number of header lines.
const MAX_HEADERS: usize = 100;

/// An I/O stream whose incoming requests are checked for conflicting framing.
#[derive(Debug)]
pub struct Guarded<T> {
    inner: T,
    /// Until the first request head is complete: when the connection fails for want of it.
    first_head: Option<crate::coarse_timer::CoarseSleep>,
    state: State,
    /// The start of a head whose end has not arrived yet.
    held: Vec<u8>,
    /// Checked bytes not yet handed on.
    ready: Vec<u8>,
    /// How much of `ready` has been handed on.
    ready_at: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a request head.
    Head,
    /// In a body with this many bytes to go.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Not looking any more: everything passes through.
    Off,
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The chunk size, in hex.
    Size {
        size: u64,
        digits: u8,
    },
    /// Extensions after the size, up to the end of the line.
    Extension {
        size: u64,
    },
    /// After the CR that ends the size line.
    SizeLf {
        size: u64,
    },
    /// Chunk data with this many bytes to go.
    Data(u64),
    DataCr,
    DataLf,
    /// The start of a trailer line, or of the empty line that ends the body.
    TrailerStart,
    TrailerLine,
    EndLf,
}

/// What a complete head means for what follows it.
enum Head {
    /// A head of this many bytes, followed by a body framed so.
    Framed(usize, State),
    /// A head after which the guard stops looking.
    Last,
}

impl<T> Guarded<T> {
    pub fn new(inner: T) -> Self {
        Guarded {
            inner,
            first_head: None,
            state: State::Head,
            held: Vec::new(),
            ready: Vec::new(),
            ready_at: 0,
        }
    }

    /// Like [`Guarded::new`], and the connection fails with [`io::ErrorKind::TimedOut`] when its
    /// first request head is not complete within `timeout`. hyper's header read timeout covers
    /// every later head, but not the first: until it has read one, it does not know the
    /// connection is HTTP/1, and nothing bounds the wait.
    pub fn with_first_head_timeout(inner: T, timeout: std::time::Duration) -> Self {
        Guarded {
            first_head: Some(crate::coarse_timer::CoarseSleep::after(timeout)),
            ..Guarded::new(inner)
        }
    }

    /// The guard, with `read` (bytes already taken from `inner`) to come first, checked as if they
    /// had just been read.
    pub fn with_read(mut self, read: &[u8]) -> Self {
        let mut bytes = read.to_vec();
        match self.scan(&mut bytes) {
            None => self.ready = bytes,
            Some(partial) => {
                self.held = bytes.split_off(partial);
                self.ready = bytes;
            }
        }
        self
    }

    /// Follows the framing through `bytes`, damaging heads that must be refused. Returns where a
    /// head starts that has not ended within `bytes`, if one does.
    fn scan(&mut self, bytes: &mut [u8]) -> Option<usize> {
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                State::Off => return None,
                State::Length(left) => {
                    let take = left.min((bytes.len() - at) as u64);
                    at += take as usize;
                    self.state = match left - take {
                        0 => State::Head,
                        left => State::Length(left),
                    };
                }
                State::Chunked(chunk) => {
                    let (used, next) = chunk.advance(&bytes[at..]);
                    at += used;
                    self.state = next;
                }
                State::Head => match check_head(&mut bytes[at..]) {
                    None => return Some(at),
                    Some(Head::Framed(len, next)) => {
                        at += len;
                        self.state = next;
                        self.first_head = None;
                    }
                    Some(Head::Last) => {
                        self.state = State::Off;
                        self.first_head = None;
                        return None;
                    }
                },
            }
        }
        None
    }
}

impl Chunk {
    /// Reads as much of `bytes` as belongs to this body: how much, and the state after it.
    fn advance(mut self, bytes: &[u8]) -> (usize, State) {
        let mut at = 0;
        while at < bytes.len() {
            if let Chunk::Data(left) = self {
                let take = left.min((bytes.len() - at) as u64);
                at += take as usize;
                self = if left == take {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left - take)
                };
                continue;
            }
            let byte = bytes[at];
            at += 1;
            let line_end = |size: u64| {
                if size == 0 {
                    Chunk::TrailerStart
                } else {
                    Chunk::Data(size)
                }
            };
            self = match (self, byte) {
                (Chunk::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
                    if digits >= 16 {
                        return (at, State::Off);
                    }
                    let digit = (b as char).to_digit(16).expect("a hex digit") as u64;
                    Chunk::Size {
                        size: size * 16 + digit,
                        digits: digits + 1,
                    }
                }
                (Chunk::Size { digits: 0, .. }, _) => return (at, State::Off),
                (Chunk::Size { size, .. }, b';' | b' ' | b'\t') => Chunk::Extension { size },
                (Chunk::Size { size, .. } | Chunk::Extension { size }, b'\r') => {
                    Chunk::SizeLf { size }
                }
                (Chunk::Size { size, .. } | Chunk::Extension { size }, b'\n') => line_end(size),
                (Chunk::Extension { size }, _) => Chunk::Extension { size },
                (Chunk::SizeLf { size }, b'\n') => line_end(size),
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataCr | Chunk::DataLf, b'\n') => Chunk::Size { size: 0, digits: 0 },
                (Chunk::TrailerStart, b'\r') => Chunk::EndLf,
                (Chunk::TrailerStart | Chunk::EndLf, b'\n') => return (at, State::Head),
                (Chunk::TrailerLine, b'\n') => Chunk::TrailerStart,
                (Chunk::TrailerStart | Chunk::TrailerLine, _) => Chunk::TrailerLine,
                // Anything else is malformed: hyper will refuse it.
                _ => return (at, State::Off),
            };
        }
        (at, State::Chunked(self))
    }
}

/// Parses the head at the start of `bytes`: `None` while it is incomplete. A head with both
/// `Transfer-Encoding` and `Content-Length` is damaged so that hyper refuses it.
fn check_head(bytes: &mut [u8]) -> Option<Head> {
    // Uninitialised: zeroing room for 100 headers costs more than parsing the usual few.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() <= MAX_HEAD => return None,
        // Too long to hold, or not a head hyper would take (HTTP/2, garbage): hyper decides.
        Ok(httparse::Status::Partial) | Err(_) => return Some(Head::Last),
    };
    let mut content_length: Option<(usize, Option<u64>)> = None;
    let mut chunked = None;
    let mut switches = request.method == Some("CONNECT");
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            let offset = header.name.as_ptr() as usize - bytes.as_ptr() as usize;
            content_length = match content_length {
                // Conflicting lengths: hyper refuses them.
                Some((_, seen)) if seen != value => return Some(Head::Last),
                _ => Some((offset, value)),
            };
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = header.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            switches = true;
        }
    }
    if request.version == Some(0) && chunked.is_some() {
        // Transfer-Encoding in HTTP/1.0: hyper refuses it.
        return Some(Head::Last);
    }
    match (chunked, content_length) {
        (Some(_), Some((offset, _))) => {
            // A space cannot start a header name: hyper's parser answers 400 to this head.
            bytes[offset] = b' ';
            Some(Head::Last)
        }
        _ if switches => Some(Head::Last),
        (Some(true), None) => Some(Head::Framed(
            len,
            State::Chunked(Chunk::Size { size: 0, digits: 0 }),
        )),
        // A last coding other than chunked: hyper refuses it.
        (Some(false), None) => Some(Head::Last),
        (None, Some((_, Some(0)))) | (None, None) => Some(Head::Framed(len, State::Head)),
        (None, Some((_, Some(length)))) => Some(Head::Framed(len, State::Length(length))),
        (None, Some((_, None))) => Some(Head::Last),
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let read = this.read_checked(cx, buf);
        if read.is_pending()
            && let Some(first_head) = &mut this.first_head
            && Pin::new(first_head).poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete request head within the header read timeout",
            )));
        }
        read
    }
}

impl<T: AsyncRead + Unpin> Guarded<T> {
    fn read_checked(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self;
        loop {
            if this.ready_at < this.ready.len() {
                let take = (this.ready.len() - this.ready_at).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + take]);
                this.ready_at += take;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Off && this.held.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.held.is_empty() {
                // The usual case: read straight into the caller's buffer and check in place.
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                let new = &mut buf.filled_mut()[before..];
                if new.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                match this.scan(new) {
                    None => return Poll::Ready(Ok(())),
                    Some(partial) => {
                        this.held.extend_from_slice(&new[partial..]);
                        buf.set_filled(before + partial);
                        if partial > 0 {
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
            } else {
                // The start of a head is held: read more of it.
                let mut more = [0u8; 8192];
                let mut more_buf = ReadBuf::new(&mut more);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut more_buf))?;
                let mut held = std::mem::take(&mut this.held);
                if more_buf.filled().is_empty() {
                    // The client stopped mid-head: hyper sees what came, then the end.
                    this.state = State::Off;
                    this.ready = held;
                    continue;
                }
                held.extend_from_slice(more_buf.filled());
                match this.scan(&mut held) {
                    None => this.ready = held,
                    Some(partial) => {
                        this.held = held.split_off(partial);
                        this.ready = held;
                    }
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
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
    use tokio::io::AsyncReadExt;

    /// What hyper would read from `input` arriving in pieces of `step` bytes.
    async fn through(input: &[u8], step: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in input.chunks(step) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut guarded = Guarded::new(server);
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            tokio::select! {
                n = guarded.read(&mut buf) => {
                    let n = n.unwrap();
                    if n == 0 { break; }
                    out.extend_from_slice(&buf[..n]);
                }
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => break,
            }
        }
        writer.await.unwrap();
        out
    }

    const CLEAN: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n\
GET /d HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test]
    async fn well_framed_requests_pass_unchanged_however_they_are_split() {
        for step in [1, 2, 3, 7, 16, 64, 1000] {
            assert_eq!(through(CLEAN, step).await, CLEAN, "pieces of {step}");
        }
    }

    #[tokio::test]
    async fn both_lengths_in_any_request_of_a_connection_damage_that_head_only() {
        let smuggle = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let mut input = CLEAN.to_vec();
        input.extend_from_slice(smuggle);
        for step in [1, 5, 64, 1000] {
            let out = through(&input, step).await;
            assert_eq!(&out[..CLEAN.len()], CLEAN, "pieces of {step}");
            let head = String::from_utf8_lossy(&out[CLEAN.len()..]).into_owned();
            assert!(head.contains("\r\n ontent-Length: 4\r\n"), "{head:?}");
            let mut headers = [httparse::EMPTY_HEADER; 16];
            assert!(
                httparse::Request::new(&mut headers)
                    .parse(&out[CLEAN.len()..])
                    .is_err(),
                "hyper's parser must refuse the damaged head"
            );
        }
    }

    #[tokio::test]
    async fn a_body_that_looks_like_a_smuggling_head_is_left_alone() {
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        input.extend_from_slice(body);
        assert_eq!(through(&input, 10).await, input);
        let mut chunked =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunked.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        chunked.extend_from_slice(body);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(through(&chunked, 10).await, chunked);
    }

    #[tokio::test]
    async fn http2_and_upgraded_connections_pass_through() {
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(through(h2, 3).await, h2);
        let upgrade =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\
GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(through(upgrade, 9).await, upgrade);
    }
}
