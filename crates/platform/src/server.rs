//! The HTTP server every service runs on: HTTP/1.1 with keep-alive and HTTP/2 (h2c prior
//! knowledge) on one port, a connection limit, a header read timeout, and graceful shutdown.
//! Plain HTTP/1 connections start on the lean loop of [`crate::http1`]; hyper serves TLS
//! connections, HTTP/2, and an HTTP/1 connection from its first request the loop does not take.
//!
//! Shutdown follows the service contract: when the shutdown future resolves, readiness turns 503;
//! for `shutdown_delay` the service keeps serving normally, so load balancers that check `/ready`
//! stop sending to it first; then the listener closes (new connections are refused), idle
//! keep-alive connections are closed, requests in flight run to completion, and after
//! `drain_timeout` whatever is left is dropped.
//!
//! The server never marks the service ready: the service does, once its own startup (opening a
//! database, say) is done. Until then `/ready` answers 503 `starting`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};

use crate::framing::Guarded;
use crate::health::{Phase, Readiness};
use crate::zero_copy::{Socket, ZeroCopy};

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
    /// Open connections beyond this wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Largest request head accepted; larger ones get 431.
    pub max_header_size: usize,
    /// Terminate TLS on this listener (HTTP/2 or HTTP/1.1 by ALPN); plain HTTP when `None`.
    pub tls: Option<crate::tls::Tls>,
    /// Serve connections on these worker threads instead of the runtime that accepts them.
    pub workers: Option<Workers>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            drain_timeout: Duration::from_secs(10),
            shutdown_delay: Duration::ZERO,
            header_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_header_size: 32 * 1024,
            tls: None,
            workers: None,
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
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + crate::contract::LeanService<Body = B>
        + Clone
        + Send
        + 'static,
    <S as Service<Request<Incoming>>>::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let local = listener.local_addr()?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Armed once per request on a keep-alive connection, and almost never reached.
        .timer(crate::coarse_timer::CoarseTimer)
        .header_read_timeout(options.header_read_timeout)
        // hyper answers 431 when a request head does not fit the read buffer.
        .max_buf_size(options.max_header_size.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(options.max_header_size as u32)
        .enable_connect_protocol();
    let builder = Arc::new(builder);
    // `true` once draining starts; every connection holds a receiver until it ends.
    let (drain, draining) = tokio::sync::watch::channel(false);
    let limits = crate::http1::Limits {
        header_read_timeout: options.header_read_timeout,
        // Positions in a head are kept as u32.
        max_header_size: options.max_header_size.clamp(8192, u32::MAX as usize),
    };
    let permits = Arc::new(Semaphore::new(options.max_connections));

    tracing::info!(address = %local, "listening");
    crate::telemetry::metrics_handle();
    let open_connections =
        metrics::gauge!("http_connections_open", "listener" => local.to_string());

    // Resolves when the listener should close: the shutdown signal, then the shutdown delay
    // (during which readiness already says "draining").
    let stop_accepting = async {
        shutdown.await;
        readiness.set_phase(Phase::Draining);
        if !options.shutdown_delay.is_zero() {
            tracing::info!(delay = ?options.shutdown_delay, "unready; still serving during the shutdown delay");
            tokio::time::sleep(options.shutdown_delay).await;
        }
    };
    let mut shutdown = std::pin::pin!(stop_accepting);
    loop {
        // Waiting for a permit before accepting keeps excess connections in the accept queue, as
        // nginx does at worker_connections, instead of accepting and dropping them.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Plain TCP connections can send files with sendfile(2); TLS ones copy.
        let transport = match &options.tls {
            None => Transport::Plain(ZeroCopy::new()),
            Some(tls) => Transport::Tls(tls.acceptor()),
        };
        let service = service.clone();
        let open = open_connections.clone();
        open.increment(1.0);
        let (builder, mut draining) = (Arc::clone(&builder), draining.clone());
        // Also the time a TLS client has for its handshake.
        let head_timeout = options.header_read_timeout;
        let (stream, spawn_on) = match &options.workers {
            None => (Accepted::Here(stream), None),
            Some(workers) => match stream.into_std() {
                Ok(stream) => (Accepted::Moving(stream), Some(workers.next())),
                Err(error) => {
                    tracing::debug!(%peer, %error, "cannot hand the connection to a worker");
                    open.decrement(1.0);
                    continue;
                }
            },
        };
        let serve_connection = async move {
            let stream = match stream {
                Accepted::Here(stream) => stream,
                Accepted::Moving(stream) => match TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::debug!(%peer, %error, "worker cannot take the connection");
                        open.decrement(1.0);
                        return;
                    }
                },
            };
            let outcome = match transport {
                Transport::Plain(offer) => {
                    let mut socket = Socket::new(stream, &offer);
                    // Plain requests on the lean loop; the connection goes to hyper at the first
                    // request that is not.
                    let served = crate::http1::serve(
                        &mut socket,
                        peer,
                        Some(&offer),
                        service.clone(),
                        limits,
                        &draining,
                    )
                    .await;
                    match served {
                        Ok(crate::http1::Ended::Closed) => Ok(()),
                        Ok(crate::http1::Ended::HandOver(read)) => {
                            let io = Guarded::with_first_head_timeout(socket, head_timeout)
                                .with_read(&read);
                            let service = with_connection(service, peer, Some(offer));
                            let connection = builder
                                .serve_connection_with_upgrades(TokioIo::new(io), service)
                                .into_owned();
                            until_drained(connection, &mut draining).await
                        }
                        Err(error) => Err(error.into()),
                    }
                }
                Transport::Tls(acceptor) => {
                    match tokio::time::timeout(head_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let service = with_connection(service, peer, None);
                            let connection = builder
                                .serve_connection_with_upgrades(
                                    TokioIo::new(Guarded::with_first_head_timeout(
                                        stream,
                                        head_timeout,
                                    )),
                                    service,
                                )
                                .into_owned();
                            until_drained(connection, &mut draining).await
                        }
                        Ok(Err(error)) => Err(format!("TLS handshake failed: {error}").into()),
                        Err(_) => Err("no TLS handshake within the header read timeout".into()),
                    }
                }
            };
            drop(draining);
            if let Err(error) = outcome {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
            open.decrement(1.0);
            drop(permit);
        };
        match spawn_on {
            None => tokio::spawn(serve_connection),
            Some(worker) => worker.spawn(serve_connection),
        };
    }

    drop(listener);
    drop(draining);
    let open = drain.receiver_count();
    tracing::info!(address = %local, open_connections = open, "shutting down, draining");
    let _ = drain.send(true);
    match tokio::time::timeout(options.drain_timeout, drain.closed()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!(
            timeout = ?options.drain_timeout,
            "drain timeout reached; dropping the requests still in flight"
        ),
    }
    Ok(())
}

/// `service` for hyper, with the connection's peer address and zero-copy offer in every
/// request's extensions (the lean loop puts them there itself).
fn with_connection<S>(
    service: S,
    peer: SocketAddr,
    offer: Option<ZeroCopy>,
) -> TowerToHyperService<
    tower::util::MapRequest<S, impl FnMut(Request<Incoming>) -> Request<Incoming> + Clone>,
>
where
    S: Service<Request<Incoming>>,
{
    TowerToHyperService::new(service.map_request(move |mut request: Request<Incoming>| {
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo(peer));
        if let Some(offer) = &offer {
            extensions.insert(offer.clone());
        }
        request
    }))
}

/// Serves `connection` to its end; once draining starts, it finishes the request in flight and
/// closes.
async fn until_drained<I, S, B>(
    connection: auto::UpgradeableConnection<'static, I, S, TokioExecutor>,
    draining: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => return served,
        // Also when the server is gone.
        _ = draining.wait_for(|d| *d) => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// How a connection's bytes travel.
enum Transport {
    Plain(ZeroCopy),
    Tls(tokio_rustls::TlsAcceptor),
}

/// A connection just accepted: served on this runtime, or on the way to a worker's.
enum Accepted {
    Here(TcpStream),
    Moving(std::net::TcpStream),
}

/// Threads that each run a single-threaded runtime, for serving connections as nginx's worker
/// processes do: a connection stays on one thread from accept to close, and everything its
/// requests use (tasks, timers, sockets to other servers, per-thread pools) stays there too,
/// without the cross-thread wake-ups and locks of a work-stealing runtime. New connections go to
/// the worker with the fewest open connections.
///
/// Cheap to clone; the threads stop when the last clone is dropped (dropping what they still
/// run).
#[derive(Clone)]
pub struct Workers(Arc<WorkerSet>);

struct WorkerSet {
    workers: Vec<Worker>,
    /// Dropped with the set: the workers' runtimes stop.
    _stop: tokio::sync::watch::Sender<()>,
}

struct Worker {
    handle: tokio::runtime::Handle,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

/// A connection counted on its worker until it ends.
struct OnWorker(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OnWorker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A worker picked for a connection.
pub struct WorkerSlot<'a>(&'a Worker);

impl WorkerSlot<'_> {
    /// Runs `future` on this worker, counted as one of its connections.
    pub fn spawn<F>(self, future: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0
            .open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let counted = OnWorker(Arc::clone(&self.0.open));
        self.0.handle.spawn(async move {
            let _counted = counted;
            future.await;
        })
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.0.workers.len())
            .finish()
    }
}

impl Workers {
    /// Starts `threads` workers (at least one), named `{name}-{i}`. `on_start` runs on each
    /// worker's runtime once it is up (a worker's own housekeeping, say).
    pub fn start<F, Fut>(threads: usize, name: &str, on_start: F) -> io::Result<Self>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (stop, stopped) = tokio::sync::watch::channel(());
        let on_start = Arc::new(on_start);
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let mut stopped = stopped.clone();
            let on_start = Arc::clone(&on_start);
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&runtime, async move {
                        tokio::task::spawn_local(on_start());
                        // Ends when every sender is gone.
                        while stopped.changed().await.is_ok() {}
                    });
                })?;
            workers.push(Worker {
                handle,
                open: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            });
        }
        Ok(Workers(Arc::new(WorkerSet {
            workers,
            _stop: stop,
        })))
    }

    /// The worker with the fewest open connections.
    pub fn next(&self) -> WorkerSlot<'_> {
        let least = self
            .0
            .workers
            .iter()
            .min_by_key(|w| w.open.load(std::sync::atomic::Ordering::Relaxed))
            .expect("there is at least one worker");
        WorkerSlot(least)
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

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    #[tokio::test]
    async fn connections_go_to_the_least_busy_worker_and_workers_stop_when_dropped() {
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let workers = Workers::start(2, "test-worker", move || {
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(thread_name());
            }
        })
        .unwrap();
        let mut names = vec![started.recv().await.unwrap(), started.recv().await.unwrap()];
        names.sort();
        assert_eq!(names, ["test-worker-0", "test-worker-1"]);

        // Two long connections land on different workers; a third goes where one has ended.
        let (end_first, first_ends) = tokio::sync::oneshot::channel::<()>();
        let (end_second, second_ends) = tokio::sync::oneshot::channel::<()>();
        let (tx, mut ran_on) = tokio::sync::mpsc::unbounded_channel();
        for (i, ends) in [first_ends, second_ends].into_iter().enumerate() {
            let tx = tx.clone();
            workers.next().spawn(async move {
                let _ = tx.send((i, thread_name()));
                let _ = ends.await;
            });
        }
        let mut on = [ran_on.recv().await.unwrap(), ran_on.recv().await.unwrap()];
        on.sort();
        let (a, b) = (on[0].1.clone(), on[1].1.clone());
        assert_ne!(a, b, "each worker takes one connection");
        end_first.send(()).unwrap();
        // The first connection's worker frees up.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let third = loop {
            let slot = workers.next();
            let counts: Vec<usize> = workers
                .0
                .workers
                .iter()
                .map(|w| w.open.load(std::sync::atomic::Ordering::Relaxed))
                .collect();
            if counts.contains(&0) {
                let tx = tx.clone();
                slot.spawn(async move {
                    let _ = tx.send((2, thread_name()));
                });
                break ran_on.recv().await.unwrap().1;
            }
            assert!(std::time::Instant::now() < deadline, "{counts:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(third, a, "the worker whose connection ended takes the next");

        // Dropping the workers stops their runtimes, and with them what they still run.
        drop(workers);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tx.strong_count() > 1 {
            assert!(std::time::Instant::now() < deadline, "a worker still runs");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(end_second);
    }
}
