//! The public listeners: bound from their config (TLS files read), served, and on a reload
//! added, kept or drained by address.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use platform::{CommonConfig, Readiness};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{self, FileConfig};
use crate::proxy::ListenerState;
use crate::routing::LiveRoutes;
use crate::{access_log, proxy, server};

/// What every public listener shares, including those a reload adds.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) live: Arc<LiveRoutes>,
    pub(crate) access_log: Arc<access_log::AccessLog>,
    pub(crate) workers: tokio_util::task::LocalPoolHandle,
    pub(crate) common: CommonConfig,
}

/// A public listener, bound and ready to serve.
pub(crate) struct PublicListener {
    pub(crate) addr: SocketAddr,
    pub(crate) listener: TcpListener,
    pub(crate) options: server::Options,
    pub(crate) service: platform::RequestLayers<proxy::Proxy>,
}

impl Shared {
    /// Binds the listener `config` describes (reading its TLS files).
    pub(crate) async fn open(&self, config: &config::Listener) -> io::Result<PublicListener> {
        let bind = config.bind.get_ref();
        let addr = platform::config::parse_bind(bind)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = match &config.tls {
            Some(files) => Some(
                platform::tls::Tls::from_pem_files(&files.cert, &files.key).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("listener {bind}: TLS: {e}"),
                    )
                })?,
            ),
            None => None,
        };
        let state = Arc::new(ListenerState {
            routes: Arc::clone(&self.live),
            client_body_timeout: config.client_body_timeout.0,
            access_log: Arc::clone(&self.access_log),
            scheme: if tls.is_some() { "https" } else { "http" },
        });
        let service =
            platform::RequestLayers::new(proxy::Proxy::new(state)).forwarding_trace_context();
        let options = server::Options {
            listen: platform::server::listener::ListenOptions {
                max_connections: config.max_connections,
                drain_timeout: self.common.drain_timeout,
                shutdown_delay: self.common.shutdown_delay,
            },
            timeouts: platform::server::hyper_conn::Timeouts {
                first_request: config.keepalive_timeout.0,
                idle: config.keepalive_timeout.0,
                send: config.send_timeout.0,
            },
            max_header_size: config.max_header_size,
            tls,
            workers: self.workers.clone(),
        };
        Ok(PublicListener {
            addr,
            listener: platform::bind(addr).await?,
            options,
            service,
        })
    }
}

/// The public listeners running, by address. A reload adds the listeners its config adds and
/// drains those it removes; a listener whose address stays keeps running as it is (its
/// certificates are read again).
pub(crate) struct Listeners {
    pub(crate) shared: Shared,
    pub(crate) running: Vec<Running>,
    pub(crate) tasks: tokio::task::JoinSet<(SocketAddr, io::Result<()>)>,
    /// The gateway is stopping: every listener drains.
    pub(crate) stop_all: watch::Receiver<bool>,
}

pub(crate) struct Running {
    /// As configured (port 0 stays 0), to match against a new config.
    addr: SocketAddr,
    /// As bound.
    local: SocketAddr,
    tls: Option<platform::tls::Tls>,
    /// Sending (or dropping) it drains this listener alone.
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Listeners {
    pub(crate) fn start(&mut self, public: PublicListener) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut stop_all = self.stop_all.clone();
        let addr = public.addr;
        self.running.push(Running {
            addr,
            local: public.listener.local_addr().unwrap_or(addr),
            tls: public.options.tls.clone(),
            stop,
        });
        let shutdown = async move {
            tokio::select! {
                _ = stopped => {}
                _ = stop_all.wait_for(|stop| *stop) => {}
            }
        };
        // The gateway's readiness belongs to the admin listener; a listener that a reload
        // removes must not make the whole gateway unready.
        let readiness = Readiness::new();
        self.tasks.spawn(async move {
            let result = server::serve(
                public.listener,
                public.service,
                public.options,
                readiness,
                shutdown,
            )
            .await;
            (addr, result)
        });
    }

    /// Binds the listeners `file` has and the running set has not, and reads the certificates of
    /// those kept; nothing changes yet.
    pub(crate) async fn prepare(&self, file: &FileConfig) -> Result<Vec<PublicListener>, String> {
        let mut added = Vec::new();
        for listener in &file.listeners {
            let bind = listener.bind.get_ref();
            let addr =
                platform::config::parse_bind(bind).map_err(|e| format!("listener {bind}: {e}"))?;
            match self.running.iter().find(|r| r.addr == addr) {
                Some(running) => {
                    if let (Some(tls), Some(files)) = (&running.tls, &listener.tls) {
                        tls.reload(&files.cert, &files.key)
                            .map_err(|e| format!("listener {bind}: TLS: {e}"))?;
                    }
                }
                None => added.push(
                    self.shared
                        .open(listener)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
            }
        }
        Ok(added)
    }

    /// Starts `added` and drains the listeners `file` no longer has; what changed, in words.
    pub(crate) fn apply(&mut self, file: &FileConfig, added: Vec<PublicListener>) -> String {
        let keep: Vec<SocketAddr> = file
            .listeners
            .iter()
            .filter_map(|l| platform::config::parse_bind(l.bind.get_ref()).ok())
            .collect();
        let (kept, removed): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| keep.contains(&r.addr));
        self.running = kept;
        let mut changes = Vec::new();
        for running in removed {
            tracing::info!(address = %running.local, "listener removed by reload; draining it");
            changes.push(format!("-{}", running.local));
            let _ = running.stop.send(());
        }
        for listener in added {
            let local = listener.listener.local_addr().unwrap_or(listener.addr);
            tracing::info!(address = %local, "listener added by reload");
            changes.push(format!("+{local}"));
            self.start(listener);
        }
        changes.join(" ")
    }

    /// Waits for a listener to end. One that the gateway did not stop has failed.
    pub(crate) async fn ended(&mut self) -> io::Result<()> {
        loop {
            let Some(joined) = self.tasks.join_next().await else {
                return std::future::pending().await;
            };
            let (addr, result) = joined.map_err(io::Error::other)?;
            let stopped = *self.stop_all.borrow() || !self.running.iter().any(|r| r.addr == addr);
            match result {
                Err(error) => return Err(error),
                Ok(()) if !stopped => {
                    return Err(io::Error::other(format!(
                        "listener {addr} stopped by itself"
                    )));
                }
                Ok(()) => {}
            }
        }
    }

    /// Waits until every listener has drained.
    pub(crate) async fn drained(mut self) -> io::Result<()> {
        let mut outcome = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(error) = joined.map_err(io::Error::other).and_then(|(_, r)| r) {
                outcome = Err(error);
            }
        }
        outcome
    }
}
