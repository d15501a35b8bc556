//! The HTTP server every service runs on: HTTP/1.1 with keep-alive and HTTP/2 (h2c prior
//! knowledge) on one port, served by hyper, within limits: a connection cap (at which
//! connections waiting for a request head are recycled), a time for the first request, an idle
//! timeout, a send timeout, the largest head; and graceful shutdown.
//!
//! Shutdown follows the service contract: when the shutdown future resolves, readiness turns 503;
//! for `shutdown_delay` the service keeps serving normally, so load balancers that check `/ready`
//! stop sending to it first; then the listener closes (new connections are refused), idle
//! keep-alive connections are closed, requests in flight run to completion, and after
//! `drain_timeout` whatever is left is closed.
//!
//! The server never marks the service ready: the service does, once its own startup (opening a
//! database, say) is done. Until then `/ready` answers 503 `starting`.
//!
//! Layout: [`listener`] (accepting, the cap, draining), [`detect`] (HTTP/1 or HTTP/2),
//! [`hyper_conn`] (connections on hyper, watched for their time bounds). The gateway serves its
//! listeners with these same parts and an HTTP/1 loop of its own.

mod clock;
pub mod detect;
pub mod hyper_conn;
pub mod listener;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;

use crate::health::Readiness;
use detect::{Prefixed, Protocol};
use hyper_conn::{ConnService, Timeouts};
use listener::{Connection, ListenOptions};

/// Connection handling limits.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
    /// How long to keep serving, unready, after shutdown is requested and before the listener
    /// closes.
    pub shutdown_delay: Duration,
    /// A client must send a request head within this time; it also bounds idle keep-alive.
    pub header_read_timeout: Duration,
    /// A client that takes nothing of an answer for this long is disconnected.
    pub send_timeout: Duration,
    /// Open connections at most; see [`listener`] for what happens at the cap.
    pub max_connections: usize,
    /// Largest request head accepted; larger ones get 431.
    pub max_header_size: usize,
    /// Register with a service registry once ready, and leave it before draining.
    pub registration: Option<crate::registration::RegistrationConfig>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            drain_timeout: Duration::from_secs(10),
            shutdown_delay: Duration::ZERO,
            header_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_header_size: 32 * 1024,
            registration: None,
        }
    }
}

impl ServeOptions {
    /// The options for [`listener::accept_loop`].
    pub fn listen_options(&self) -> ListenOptions {
        ListenOptions {
            max_connections: self.max_connections,
            drain_timeout: self.drain_timeout,
            shutdown_delay: self.shutdown_delay,
        }
    }

    /// The time bounds of each connection.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            first_request: self.header_read_timeout,
            idle: self.header_read_timeout,
            send: self.send_timeout,
        }
    }
}

/// Binds a listener, with an error that says which address could not be bound.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves `service` on `listener` until `shutdown` resolves, then drains. The peer address is
/// available to handlers as `ConnectInfo<SocketAddr>`.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    options: ServeOptions,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: ConnService<B>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let timeouts = options.timeouts();
    let max_header_size = options.max_header_size;
    let registered = match &options.registration {
        Some(config) => Some(
            crate::registration::start(
                config,
                "flotilla",
                listener.local_addr()?,
                readiness.clone(),
            )
            .map_err(io::Error::other)?,
        ),
        None => None,
    };
    // Out of the registry before anything else happens on shutdown, so routers stop sending
    // work while this process still serves what is in flight.
    let shutdown = async move {
        shutdown.await;
        if let Some(registered) = registered {
            registered.leave().await;
        }
    };
    listener::accept_loop(
        listener,
        options.listen_options(),
        readiness,
        shutdown,
        move |connection| {
            let service = service.clone();
            tokio::spawn(async move {
                let Connection {
                    mut stream,
                    peer,
                    control,
                } = connection;
                let mut read = BytesMut::new();
                let outcome = match first_bytes(&mut stream, &mut read, timeouts, &control).await {
                    Some(Protocol::Http1) => {
                        hyper_conn::serve_http1(
                            Prefixed::new(read, stream),
                            peer,
                            service,
                            max_header_size,
                            timeouts,
                            &control,
                        )
                        .await
                    }
                    Some(Protocol::Http2) => {
                        hyper_conn::serve_h2(
                            Prefixed::new(read, stream),
                            peer,
                            service,
                            max_header_size as u32,
                            timeouts,
                            &control,
                        )
                        .await
                    }
                    None => Ok(()),
                };
                if let Err(error) = outcome {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
        },
    )
    .await
}

/// Reads a new connection's first bytes until its protocol is known (see [`detect`]); `None`
/// when it sent too little in time, closed, was recycled or the server is closing.
pub async fn first_bytes<T: tokio::io::AsyncRead + Unpin>(
    io: &mut T,
    read: &mut BytesMut,
    timeouts: Timeouts,
    control: &listener::Control,
) -> Option<Protocol> {
    tokio::select! {
        detected = detect::detect(io, read, timeouts.first_request) => detected.ok().flatten(),
        () = control.recycled() => None,
        () = control.closing() => None,
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler can be installed");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler can be installed");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_head_and_an_idle_keep_alive_connection_are_closed_after_the_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = axum::Router::new().fallback(|| async { "hi" });
        let options = ServeOptions {
            header_read_timeout: Duration::from_millis(500),
            ..ServeOptions::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            service,
            options,
            Readiness::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        // Reads until the server closes the connection: what it sent, and after how long.
        async fn until_closed(stream: &mut tokio::net::TcpStream) -> (String, Duration) {
            let started = std::time::Instant::now();
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
                .await
                .expect("the server closes the connection")
                .unwrap();
            (
                String::from_utf8_lossy(&got).into_owned(),
                started.elapsed(),
            )
        }

        // Half a head, then nothing.
        let mut stalled = tokio::net::TcpStream::connect(address).await.unwrap();
        stalled
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        let (_, after) = until_closed(&mut stalled).await;
        assert!(
            after >= Duration::from_millis(300),
            "closed after {after:?}"
        );

        // A head trickling in, a byte at a time but never complete: the timeout covers the whole
        // head, not each read.
        let mut trickle = tokio::net::TcpStream::connect(address).await.unwrap();
        let started = std::time::Instant::now();
        let mut closed_after = None;
        for byte in
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
        {
            if trickle.write_all(&[*byte]).await.is_err() {
                closed_after = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let closed_after = match closed_after {
            Some(after) => after,
            // Every byte went out (so at least 4 s passed): wait for the close, if any.
            None => {
                until_closed(&mut trickle).await;
                started.elapsed()
            }
        };
        assert!(
            closed_after < Duration::from_millis(2500),
            "a trickling head held the connection for {closed_after:?}"
        );

        // One request answered, then an idle keep-alive connection.
        let mut idle = tokio::net::TcpStream::connect(address).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let (answer, after) = until_closed(&mut idle).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hi"),
            "{answer}"
        );
        assert!(
            after >= Duration::from_millis(300),
            "closed after {after:?}"
        );

        // A connection that keeps sending requests in time stays open past the timeout.
        let mut busy = tokio::net::TcpStream::connect(address).await.unwrap();
        for _ in 0..4 {
            busy.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = busy.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
