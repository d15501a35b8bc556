//! `flotilla gateway`: the reverse proxy in front of every tier, replacing the seeds' nginx.
//!
//! Requests are matched to a route by host and path prefix and sent to a server of the route's
//! upstream pool, picked by the pool's policy among the servers that are up (active health checks,
//! passive failure counting as nginx, `max_conns`, backups only when nothing else is up). A
//! request that fails on one server is retried on another when that is safe, within a retry
//! budget. Bodies stream both ways; WebSocket upgrades pass through. On SIGTERM the gateway stops
//! accepting, finishes what is in flight and exits.
//!
//! Layout:
//! - [`config`]: the TOML file, `${VAR}` expansion, errors with file, line and key.
//! - [`env_mode`]: the gateway's settings, and the seeds' nginx variables as a config.
//! - `validate`: checks a config beyond its types.
//! - `routing`: the route table.
//! - `upstream`: a pool at run time: servers, health state, balancing policies.
//! - `health_check`: active checks.
//! - `proxy`: the request path and its retries; `headers`, `body`: what it rewrites and streams.
//! - `client`: the pooled HTTP client to upstream servers.
//! - `error`: the gateway's own error answers.
//! - `access_log`: one JSON line per request, written off the request path.
//!
//! The request path is the platform's contract layers (request id, access log and metrics,
//! panics) around one handler; later layers (compression, auth, static files) wrap that handler.

mod access_log;
pub mod config;
pub mod env_mode;
pub mod error;

mod body;
mod client;
mod headers;
mod health_check;
mod proxy;
mod routing;
mod upstream;
mod validate;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use platform::{CommonConfig, ConfigError, ErrorStyle, Readiness, ServeOptions, Source};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::FileConfig;
pub use env_mode::SETTINGS;

use crate::proxy::{ListenerState, LiveRoutes};
use crate::routing::RouteTable;
use crate::upstream::Upstream;

#[derive(Debug, Clone)]
pub struct Config {
    pub file: FileConfig,
    /// Where `file` came from: a path, or `environment`.
    pub origin: String,
    pub worker_threads: Option<usize>,
    pub print_config: bool,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let (file, origin) = env_mode::file_config(source)?;
        Ok(Config {
            file,
            origin,
            worker_threads: env_mode::worker_threads(source)?,
            print_config: source.switch(
                SETTINGS
                    .iter()
                    .find(|s| s.env == "GATEWAY_PRINT_CONFIG")
                    .expect("print-config is a setting"),
            )?,
            common: CommonConfig::from_source(source)?,
        })
    }

    /// The effective config as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        let body =
            toml::to_string_pretty(&self.file).unwrap_or_else(|e| format!("# cannot print: {e}\n"));
        format!("# effective gateway config, from {}\n{body}", self.origin)
    }
}

/// A gateway whose listeners are bound, ready to serve.
pub struct Bound {
    listeners: Vec<(TcpListener, ServeOptions, Router)>,
    access_log: Arc<access_log::AccessLog>,
    admin: Option<(TcpListener, Router)>,
    live: Arc<LiveRoutes>,
    upstreams: Vec<Arc<Upstream>>,
    readiness: Readiness,
    common: CommonConfig,
    /// The config file to re-read on SIGHUP; `None` in env mode.
    reload_from: Option<String>,
}

fn build_upstreams(file: &FileConfig) -> Vec<Arc<Upstream>> {
    file.upstreams
        .iter()
        .map(|(name, upstream)| Arc::new(Upstream::new(name, upstream)))
        .collect()
}

/// Binds every listener (the public ones and the admin one), so their addresses are known before
/// serving starts.
pub async fn bind(config: &Config) -> io::Result<Bound> {
    let file = &config.file;
    let upstreams = build_upstreams(file);
    let live = Arc::new(LiveRoutes::new(RouteTable::new(&file.routes, &upstreams)));
    let readiness = Readiness::new();
    for name in file.upstreams.keys() {
        let live = Arc::clone(&live);
        let name = name.clone();
        // Reported, not critical: a gateway with a dead upstream still serves the others, and an
        // orchestrator restarting the gateway would not bring that upstream back.
        readiness.add_check(format!("upstream {name}"), false, move || {
            let upstream = live.current().upstream(&name);
            async move {
                let Some(upstream) = upstream else {
                    return Err("no longer configured".to_string());
                };
                let (primaries, backups) = upstream.available_count();
                let total = upstream.servers.len();
                if primaries + backups == 0 {
                    Err(format!("none of {total} servers is available"))
                } else {
                    Ok(json!({ "available": primaries, "backups_available": backups, "servers": total }))
                }
            }
        });
    }

    let access_log = access_log::AccessLog::open(&file.access_log)?;
    let mut listeners = Vec::new();
    for listener in &file.listeners {
        let addr = platform::config::parse_bind(listener.bind.get_ref())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let state = Arc::new(ListenerState {
            routes: Arc::clone(&live),
            client_body_timeout: listener.client_body_timeout.0,
            access_log: Arc::clone(&access_log),
        });
        let router = platform::with_request_layers(
            Router::new().fallback(proxy::handle).with_state(state),
            ErrorStyle::Plain,
        );
        let options = ServeOptions {
            drain_timeout: config.common.drain_timeout,
            shutdown_delay: config.common.shutdown_delay,
            header_read_timeout: listener.keepalive_timeout.0,
            max_connections: listener.max_connections,
            max_header_size: listener.max_header_size,
        };
        listeners.push((platform::bind(addr).await?, options, router));
    }
    let admin = match file.admin.bind.as_str() {
        "off" => None,
        bind => {
            let addr = platform::config::parse_bind(bind)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let router = platform::contract_router(Router::new(), &readiness, ErrorStyle::Json);
            Some((platform::bind(addr).await?, router))
        }
    };
    Ok(Bound {
        listeners,
        access_log,
        admin,
        live,
        upstreams,
        readiness,
        common: config.common.clone(),
        reload_from: (config.origin != "environment" && config.origin != "test")
            .then(|| config.origin.clone()),
    })
}

impl Bound {
    /// The public listeners' addresses, in config order.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _, _)| l.local_addr().ok())
            .collect()
    }

    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains every listener.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let health_stop = start_health_checks(&self.upstreams);
        if let Some(path) = self.reload_from.clone() {
            tokio::spawn(reload_on_sighup(
                path,
                Arc::clone(&self.live),
                health_stop,
                stop_rx.clone(),
            ));
        }
        let mut servers = tokio::task::JoinSet::new();
        for (listener, options, router) in self.listeners {
            let readiness = self.readiness.clone();
            servers.spawn(platform::serve(
                listener,
                router,
                options,
                readiness,
                stopped(stop_rx.clone()),
            ));
        }
        if let Some((listener, router)) = self.admin {
            let options = self.common.serve_options();
            servers.spawn(platform::serve(
                listener,
                router,
                options,
                self.readiness.clone(),
                stopped(stop_rx.clone()),
            ));
        }
        self.readiness.started();
        tokio::select! {
            () = shutdown => {}
            // A listener that fails on its own takes the gateway down rather than half-serving.
            Some(result) = servers.join_next() => {
                let _ = stop_tx.send(true);
                result.map_err(io::Error::other)??;
            }
        }
        let _ = stop_tx.send(true);
        let mut outcome = Ok(());
        while let Some(result) = servers.join_next().await {
            if let Err(error) = result.map_err(io::Error::other).and_then(|r| r) {
                outcome = Err(error);
            }
        }
        let access_log = self.access_log;
        let _ = tokio::task::spawn_blocking(move || access_log.finish()).await;
        outcome
    }
}

/// Starts the active checks of a generation of upstreams; dropping or signalling the returned
/// sender stops them.
fn start_health_checks(upstreams: &[Arc<Upstream>]) -> watch::Sender<bool> {
    let (tx, rx) = watch::channel(false);
    for upstream in upstreams {
        tokio::spawn(health_check::run(Arc::clone(upstream), rx.clone()));
    }
    tx
}

/// SIGHUP re-reads the config file and swaps in its routes and upstreams (listeners stay as they
/// are). Requests in flight finish on the pools they started with. A file with errors is
/// reported and the running config kept.
async fn reload_on_sighup(
    path: String,
    live: Arc<LiveRoutes>,
    mut health_stop: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; config reload is off");
        return;
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match config::load(&path, &Source::from_env()) {
            Ok(file) => {
                let upstreams = build_upstreams(&file);
                live.replace(RouteTable::new(&file.routes, &upstreams));
                let _ = health_stop.send(true);
                health_stop = start_health_checks(&upstreams);
                let servers: usize = upstreams.iter().map(|u| u.servers.len()).sum();
                tracing::info!(config = %path, upstreams = upstreams.len(), servers, "config reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "config reload failed; keeping the running config")
            }
        }
    }
}

/// Binds and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    bind(&config).await?.serve(shutdown).await
}
