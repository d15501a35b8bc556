//! Zero-copy file bodies: on plain HTTP/1 connections, a response can send a file's bytes from
//! the page cache to the socket with `sendfile(2)`, never copying them through user space.
//!
//! hyper writes bodies from buffers it is given and has no way to send a file. Its HTTP/1 writer
//! does, however, hand a body's own `Bytes` to the socket unchanged (vectored writes, no copy).
//! So a [`FileBody`] stands for a file range with placeholder slices of one reserved region of
//! memory, and queues the range it stands for; the connection's socket ([`Socket`]) recognises a
//! write that starts inside the region and sends the queued file range instead.
//!
//! Wrong bytes can never reach a client this way:
//! - [`ZeroCopy::of`] only offers zero copy on connections whose socket is a [`Socket`]
//!   (plain TCP; TLS connections copy) and for HTTP/1 requests (HTTP/2 frames bodies itself);
//! - whoever takes a [`ZeroCopy`] must send the body to the client unchanged (a layer that reads
//!   the body, to compress it, sees only the placeholders: callers decide before they ask);
//! - the socket checks every placeholder write against the front of its queue (same position,
//!   no longer than what is left) and fails the connection on any mismatch, as it does when a
//!   file turns out shorter than announced (it changed while being sent).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The longest placeholder: a body larger than this is sent as several.
const REGION_LEN: usize = 1 << 20;

/// The reserved region placeholders are slices of. Zeroed and never written or read, so its
/// pages are never touched and take no memory.
fn region() -> &'static Bytes {
    static REGION: OnceLock<Bytes> = OnceLock::new();
    REGION.get_or_init(|| Bytes::from(vec![0u8; REGION_LEN]))
}

/// Where `slice` starts in the region, if it is a placeholder.
fn offset_in_region(slice: &[u8]) -> Option<usize> {
    let start = region().as_ptr() as usize;
    let at = (slice.as_ptr() as usize).wrapping_sub(start);
    (at < REGION_LEN && !slice.is_empty()).then_some(at)
}

/// A file range a placeholder stands for.
#[derive(Debug)]
struct Range {
    file: Arc<File>,
    offset: u64,
    len: usize,
    /// How much of it has been sent.
    sent: usize,
}

type Queue = Arc<Mutex<VecDeque<Range>>>;

/// A connection's offer of zero-copy bodies, found in the extensions of its requests.
#[derive(Debug, Clone)]
pub(crate) struct ZeroCopy(Queue);

impl ZeroCopy {
    /// An offer for one connection, to pair with its [`Socket`].
    #[allow(
        clippy::new_without_default,
        reason = "one per connection, made on purpose"
    )]
    pub(crate) fn new() -> ZeroCopy {
        ZeroCopy(Queue::default())
    }

    /// The offer for `request`: only on a connection that can take it and only over HTTP/1.
    pub(crate) fn of<B>(request: &http::Request<B>) -> Option<ZeroCopy> {
        let http1 = request.version() <= http::Version::HTTP_11;
        http1
            .then(|| request.extensions().get::<ZeroCopy>().cloned())
            .flatten()
    }

    /// A body of `count` bytes of `file` from `start`. The response carrying it must reach the
    /// client unchanged (see the module docs).
    pub(crate) fn body(self, file: File, start: u64, count: u64) -> FileBody {
        FileBody {
            queue: self.0,
            file: Arc::new(file),
            next: start,
            left: count,
        }
    }
}

/// A response body that sends a file range with `sendfile(2)`.
#[derive(Debug)]
pub(crate) struct FileBody {
    queue: Queue,
    file: Arc<File>,
    next: u64,
    left: u64,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let len = self.left.min(REGION_LEN as u64) as usize;
        let range = Range {
            file: Arc::clone(&self.file),
            offset: self.next,
            len,
            sent: 0,
        };
        lock(&self.queue).push_back(range);
        self.next += len as u64;
        self.left -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(region().slice(..len)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

fn lock(queue: &Queue) -> std::sync::MutexGuard<'_, VecDeque<Range>> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// A plain TCP connection that sends placeholder writes as file ranges.
#[derive(Debug)]
pub(crate) struct Socket {
    stream: TcpStream,
    queue: Queue,
}

impl Socket {
    /// The socket for `stream` that takes the bodies `offer` (to put in the extensions of the
    /// connection's requests) makes.
    pub(crate) fn new(stream: TcpStream, offer: &ZeroCopy) -> Socket {
        Socket {
            stream,
            queue: Arc::clone(&offer.0),
        }
    }

    /// Sends (part of) the file range the placeholder `slice` stands for.
    fn poll_send_file(&mut self, cx: &mut Context<'_>, slice: &[u8]) -> Poll<io::Result<usize>> {
        let at = offset_in_region(slice).expect("called with a placeholder");
        let mut queue = lock(&self.queue);
        let Some(range) = queue.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "a zero-copy placeholder without a file range",
            )));
        };
        if at != range.sent || slice.len() > range.len - range.sent {
            return Poll::Ready(Err(io::Error::other(
                "a zero-copy placeholder out of step with its file range",
            )));
        }
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                let mut offset = (range.offset + range.sent as u64) as i64;
                nix::sys::sendfile::sendfile(
                    &self.stream,
                    &*range.file,
                    Some(&mut offset),
                    slice.len(),
                )
                .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file is shorter than announced (it changed while being sent)",
                    )));
                }
                Ok(sent) => {
                    range.sent += sent;
                    let finished = range.sent == range.len;
                    if finished {
                        queue.pop_front();
                    }
                    metrics::counter!("http_sendfile_bytes_total").increment(sent as u64);
                    return Poll::Ready(Ok(sent));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Ordinary slices before the first placeholder are written as they are; a placeholder at
    /// the front is sent from its file.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match bufs.iter().position(|b| offset_in_region(b).is_some()) {
            None => Pin::new(&mut self.stream).poll_write_vectored(cx, bufs),
            Some(first) if bufs[..first].iter().all(|b| b.is_empty()) => {
                self.poll_send_file(cx, &bufs[first])
            }
            Some(first) => Pin::new(&mut self.stream).poll_write_vectored(cx, &bufs[..first]),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A socket with its offer, and the peer reading what it sends.
    async fn pair() -> (Socket, ZeroCopy, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let offer = ZeroCopy::new();
        (Socket::new(stream, &offer), offer, peer)
    }

    fn file_of(contents: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut named = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut named, contents).unwrap();
        let file = File::open(named.path()).unwrap();
        (named, file)
    }

    /// Writes every frame of `body` as hyper does: the head and the data in one vectored write,
    /// then whatever is left, as often as it takes.
    async fn send(socket: &mut Socket, head: &[u8], mut body: FileBody) -> io::Result<()> {
        let mut head = head;
        while let Some(frame) = body.frame().await {
            let data = frame?.into_data().unwrap();
            let mut data = &data[..];
            while !head.is_empty() || !data.is_empty() {
                let bufs = [IoSlice::new(head), IoSlice::new(data)];
                let n = std::future::poll_fn(|cx| {
                    Pin::new(&mut *socket).poll_write_vectored(cx, &bufs)
                })
                .await?;
                let from_head = n.min(head.len());
                head = &head[from_head..];
                data = &data[n - from_head..];
            }
        }
        socket.flush().await
    }

    #[tokio::test]
    async fn file_ranges_arrive_after_the_head_across_several_placeholders() {
        let contents: Vec<u8> = (0..3 * REGION_LEN as u32 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let (_named, file) = file_of(&contents);
        let (mut socket, offer, mut peer) = pair().await;
        let (start, count) = (7_u64, 2 * REGION_LEN as u64 + 100_000);
        let body = offer.clone().body(file, start, count);
        assert_eq!(body.size_hint().exact(), Some(count));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        send(&mut socket, b"HEAD\r\n", body).await.unwrap();
        // Ordinary writes still pass through.
        socket.write_all(b"after").await.unwrap();
        drop(socket);
        let got = reader.await.unwrap();
        let range = &contents[start as usize..(start + count) as usize];
        assert_eq!(&got[..6], b"HEAD\r\n");
        assert_eq!(&got[6..got.len() - 5], range);
        assert_eq!(&got[got.len() - 5..], b"after");
        assert!(lock(&offer.0).is_empty(), "every range was sent");
    }

    #[tokio::test]
    async fn a_file_shorter_than_announced_fails_the_connection_without_filling_in() {
        let (named, file) = file_of(&[b'x'; 1000]);
        let (mut socket, offer, mut peer) = pair().await;
        let body = offer.body(file, 0, 1000);
        named.as_file().set_len(400).unwrap();
        let error = send(&mut socket, b"", body).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
        drop(socket);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got,
            vec![b'x'; 400],
            "what the file had, and nothing made up"
        );
    }

    #[tokio::test]
    async fn placeholders_without_their_range_or_out_of_step_are_refused() {
        let (mut socket, offer, _peer) = pair().await;
        let error = socket.write(&region()[..10]).await.unwrap_err();
        assert!(
            error.to_string().contains("without a file range"),
            "{error}"
        );

        let (_named, file) = file_of(b"0123456789");
        let mut body = offer.body(file, 0, 10);
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let error = socket.write(&data[3..]).await.unwrap_err();
        assert!(error.to_string().contains("out of step"), "{error}");
    }

    #[test]
    fn offered_only_for_http1_requests_on_connections_that_have_it() {
        let mut request = http::Request::new(());
        assert!(
            ZeroCopy::of(&request).is_none(),
            "no offer on this connection"
        );
        request.extensions_mut().insert(ZeroCopy::new());
        assert!(ZeroCopy::of(&request).is_some());
        *request.version_mut() = http::Version::HTTP_2;
        assert!(
            ZeroCopy::of(&request).is_none(),
            "HTTP/2 frames bodies itself"
        );
    }
}
