//! The gateway's listeners: connections accepted by the platform's listener (its cap, recycling
//! and draining), served on the gateway's worker threads: HTTP/1 by the gateway's own loop
//! ([`http1`]), HTTP/2 by hyper within the platform's time bounds, TLS by rustls with HTTP/2 or
//! HTTP/1.1 chosen by ALPN.
//!
//! Layout: [`http1`] (the connection loop), `request_body` (a request body read while it is
//! handled), [`tunnel`] (switched protocols), [`zero_copy`] (files sent with `sendfile(2)`).
//! Connections are served on worker threads (`tokio_util`'s local pool: a single-threaded
//! runtime per core, as nginx's worker processes; the least busy takes each connection).

pub(crate) mod http1;
mod request_body;
pub(crate) mod tunnel;
pub(crate) mod zero_copy;

use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use platform::Readiness;
use platform::server::detect::{Prefixed, Protocol};
use platform::server::hyper_conn::{self, ConnService, Timeouts};
use platform::server::listener::{Connection, Control, ListenOptions};
use tokio::net::{TcpListener, TcpStream};

use http1::LeanService;
use zero_copy::{Socket, ZeroCopy};

/// How a public listener serves its connections.
#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) listen: ListenOptions,
    /// Header read, idle keep-alive and send timeouts.
    pub(crate) timeouts: Timeouts,
    pub(crate) max_header_size: usize,
    /// Terminate TLS on this listener; plain HTTP when `None`.
    pub(crate) tls: Option<platform::tls::Tls>,
    /// The worker threads (the least busy takes each connection).
    pub(crate) workers: tokio_util::task::LocalPoolHandle,
}

/// Serves `service` on `listener` until `shutdown` resolves, then drains.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    service: S,
    options: Options,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: LeanService<Body = axum::body::Body> + ConnService<axum::body::Body> + Clone,
    <S as tower::Service<http::Request<axum::body::Body>>>::Future: Send + 'static,
{
    let shared = Arc::new(options.clone());
    platform::server::listener::accept_loop(
        listener,
        options.listen,
        readiness,
        shutdown,
        move |connection| {
            let Connection {
                stream,
                peer,
                control,
            } = connection;
            // Moved to the worker's runtime as a plain socket.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "cannot hand the connection to a worker");
                    return;
                }
            };
            let service = service.clone();
            let options = Arc::clone(&shared);
            // The worker with the fewest tasks takes it; the handle is not needed.
            drop(shared.workers.spawn_pinned(move || async move {
                let stream = match TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::debug!(%peer, %error, "worker cannot take the connection");
                        return;
                    }
                };
                let served = match &options.tls {
                    None => serve_plain(stream, peer, service, &options, &control).await,
                    Some(tls) => serve_tls(stream, peer, tls, service, &options, &control).await,
                };
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                drop(control);
            }));
        },
    )
    .await
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn limits(options: &Options) -> http1::Limits {
    http1::Limits {
        header_read_timeout: options.timeouts.idle,
        max_header_size: options.max_header_size,
        send_timeout: options.timeouts.send,
    }
}

async fn serve_plain<S>(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    service: S,
    options: &Options,
    control: &Control,
) -> Result<(), BoxError>
where
    S: LeanService<Body = axum::body::Body> + ConnService<axum::body::Body>,
    <S as tower::Service<http::Request<axum::body::Body>>>::Future: Send + 'static,
{
    // Plain TCP connections can send files with sendfile(2).
    let offer = ZeroCopy::new();
    let mut socket = Socket::new(stream, &offer);
    let mut read = BytesMut::with_capacity(8 * 1024);
    match platform::server::first_bytes(&mut socket, &mut read, options.timeouts, control).await {
        Some(Protocol::Http1) => {
            http1::serve(
                &mut socket,
                read,
                peer,
                Some(&offer),
                service,
                limits(options),
                control,
            )
            .await?;
        }
        Some(Protocol::Http2) => {
            hyper_conn::serve_h2(
                Prefixed::new(read, socket),
                peer,
                service,
                options.max_header_size as u32,
                options.timeouts,
                control,
            )
            .await?;
        }
        None => {}
    }
    Ok(())
}

async fn serve_tls<S>(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    tls: &platform::tls::Tls,
    service: S,
    options: &Options,
    control: &Control,
) -> Result<(), BoxError>
where
    S: LeanService<Body = axum::body::Body> + ConnService<axum::body::Body>,
    <S as tower::Service<http::Request<axum::body::Body>>>::Future: Send + 'static,
{
    // The handshake has the time a plain client has for its first head.
    let handshake = tokio::time::timeout(
        options.timeouts.first_request,
        tls.acceptor().accept(stream),
    );
    let mut stream = tokio::select! {
        accepted = handshake => match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(format!("TLS handshake failed: {error}").into()),
            Err(_) => return Err("no TLS handshake within the header read timeout".into()),
        },
        () = control.recycled() => return Ok(()),
        () = control.closing() => return Ok(()),
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        hyper_conn::serve_h2(
            stream,
            peer,
            service,
            options.max_header_size as u32,
            options.timeouts,
            control,
        )
        .await?;
    } else {
        http1::serve(
            &mut stream,
            BytesMut::with_capacity(8 * 1024),
            peer,
            None,
            service,
            limits(options),
            control,
        )
        .await?;
    }
    Ok(())
}
