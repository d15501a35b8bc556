//! Tunnels: a client connection that switched protocols (a WebSocket, say) joined to the
//! upstream's, byte for byte, until either side closes, neither sends anything for the idle
//! timeout, or the listener closes (the end of its drain timeout).
//!
//! On HTTP/1 the tunnel runs inside the connection's own task, so it keeps its place under the
//! listener's connection cap for as long as it lasts; on HTTP/2 it is one stream of a connection
//! that does.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The upstream's end of a switched protocol, in the extensions of the `101` response the
/// proxy passes on: the connection that serves the client joins the two once the `101` is sent.
#[derive(Clone)]
pub(crate) struct UpstreamUpgrade {
    pub(crate) upgrade: hyper::upgrade::OnUpgrade,
    /// The tunnel closes after this long with no byte either way.
    pub(crate) idle_timeout: Duration,
}

/// Joins `client` to the upstream of `upgrade`, first sending the upstream what the client sent
/// after its request (`early`).
pub(crate) async fn run<C>(
    client: &mut C,
    early: &[u8],
    upgrade: UpstreamUpgrade,
    closing: impl Future<Output = ()>,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = upgrade
        .upgrade
        .await
        .map_err(|e| io::Error::other(format!("upstream upgrade: {e}")))?;
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    if !early.is_empty() {
        upstream.write_all(early).await?;
    }
    join(client, &mut upstream, upgrade.idle_timeout, closing).await
}

/// Copies bytes both ways until either side closes, `idle` passes without a byte, or `closing`
/// resolves.
pub(crate) async fn join<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    closing: impl Future<Output = ()>,
) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = AtomicU64::new(crate::coarse_timer::millis());
    let mut a = Watched { io: a, last: &last };
    let mut b = Watched { io: b, last: &last };
    let quiet = async {
        loop {
            let since = crate::coarse_timer::millis().saturating_sub(last.load(Ordering::Relaxed));
            let since = Duration::from_millis(since);
            if since >= idle {
                return;
            }
            tokio::time::sleep(idle - since).await;
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut a, &mut b) => copied.map(|_| ()),
        () = quiet => {
            tracing::debug!(?idle, "tunnel idle; closing");
            Ok(())
        }
        () = closing => Ok(()),
    }
}

/// An I/O stream whose reads count as activity.
struct Watched<'a, T> {
    io: &'a mut T,
    last: &'a AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut *self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last
                .store(crate::coarse_timer::millis(), Ordering::Relaxed);
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_quiet_tunnel_closes() {
        let (mut client, mut near) = tokio::io::duplex(1024);
        let (mut far, mut server) = tokio::io::duplex(1024);
        let tunnel = tokio::spawn(async move {
            join(
                &mut near,
                &mut far,
                Duration::from_millis(300),
                std::future::pending(),
            )
            .await
        });
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        // Then nothing: the tunnel ends, and both sides see their peer close.
        tokio::time::timeout(Duration::from_secs(5), tunnel)
            .await
            .expect("an idle tunnel closes")
            .unwrap()
            .unwrap();
        assert_eq!(client.read(&mut got).await.unwrap(), 0);
        assert_eq!(server.read(&mut got).await.unwrap(), 0);
    }
}
