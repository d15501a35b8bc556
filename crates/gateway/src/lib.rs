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
//! - `discovery`: host names in server addresses, looked up again and again.
//! - `health_check`: active checks.
//! - `proxy`: the request path and its retries; `headers`, `body`: what it rewrites and streams.
//! - `client`: the pooled HTTP client to upstream servers.
//! - `compress`: brotli, zstd and gzip for the routes that ask for it.
//! - `auth`: basic authentication from htpasswd files.
//! - `limits`: request rate per client address; (with `body`) the largest request body.
//! - `error`: the gateway's own error answers.
//! - `access_log`: one JSON line per request, written off the request path.
//! - `static_files`: routes that serve a directory.
//! - `status`: the admin listener's `/status` (JSON) and status page.
//!
//! The request path is the platform's contract layers (request id, access log and metrics,
//! panics) around one handler; later layers (compression, auth, static files) wrap that handler.

mod access_log;
mod auth;
pub mod config;
pub mod env_mode;
pub mod error;

mod body;
mod client;
mod compress;
mod discovery;
mod headers;
mod health_check;
mod limits;
mod proxy;
mod routing;
mod static_files;
mod status;
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
    /// Where the config was read from (environment and flags), to read it again on SIGHUP;
    /// `None` when it cannot be re-read (tests).
    pub reload_source: Option<Source>,
    pub worker_threads: Option<usize>,
    pub print_config: bool,
    /// `--reload`: ask the running gateway to read its config again instead of starting one.
    pub reload: bool,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let (file, origin) = env_mode::file_config(source)?;
        Ok(Config {
            file,
            origin,
            reload_source: Some(source.clone()),
            worker_threads: env_mode::worker_threads(source)?,
            print_config: source.switch(
                SETTINGS
                    .iter()
                    .find(|s| s.env == "GATEWAY_PRINT_CONFIG")
                    .expect("print-config is a setting"),
            )?,
            reload: source.switch(
                SETTINGS
                    .iter()
                    .find(|s| s.env == "GATEWAY_RELOAD")
                    .expect("reload is a setting"),
            )?,
            common: CommonConfig::from_source(source)?,
        })
    }

    /// `--reload`: asks the gateway running with this config, through its admin listener, to
    /// read its config again; what it answered.
    pub fn request_reload(&self) -> Result<String, String> {
        let bind = &self.file.admin.bind;
        if bind == "off" {
            return Err("the admin listener is off; send the gateway SIGHUP instead".into());
        }
        let mut addr =
            platform::config::parse_bind(bind).map_err(|e| format!("admin.bind: {e}"))?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let url = format!("http://{addr}/reload");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let (status, body) = runtime.block_on(platform::health::call(
            http::Method::POST,
            &url,
            std::time::Duration::from_secs(30),
        ))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{url} answered {status}: {}", body.trim()))
        }
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
    pools: Pools,
    readiness: Readiness,
    common: CommonConfig,
    /// Where to read the config again on SIGHUP.
    reload_from: Option<Source>,
    /// `POST /reload` requests from the admin listener.
    reloads: tokio::sync::mpsc::Receiver<status::ReloadReply>,
    /// The TLS listeners by configured address, whose certificates a reload reads again.
    tls_listeners: Vec<(String, platform::tls::Tls)>,
}

/// The routes and upstream pools in force, what they were built from, and their health checks.
/// A reload or a change in DNS builds the next one; requests in flight finish on the pools they
/// started with.
struct Pools {
    file: FileConfig,
    resolved: discovery::Resolved,
    upstreams: Vec<Arc<Upstream>>,
    /// Dropping it stops this generation's health checks.
    health_stop: Option<watch::Sender<bool>>,
}

impl Pools {
    /// Builds the pools for `file`, taking over server state from `previous`, and puts them in
    /// force. Health checks start with [`Pools::start_health_checks`].
    fn install(
        live: &LiveRoutes,
        file: FileConfig,
        resolved: discovery::Resolved,
        previous: &[Arc<Upstream>],
    ) -> Self {
        let upstreams: Vec<Arc<Upstream>> = file
            .upstreams
            .iter()
            .map(|(name, upstream)| {
                let before = previous.iter().find(|u| &*u.name == name);
                Arc::new(Upstream::new(
                    name,
                    upstream,
                    &resolved,
                    before.map(|u| &**u),
                ))
            })
            .collect();
        live.replace(RouteTable::new(&file.routes, &upstreams));
        Pools {
            file,
            resolved,
            upstreams,
            health_stop: None,
        }
    }

    fn start_health_checks(&mut self) {
        let (tx, rx) = watch::channel(false);
        for upstream in &self.upstreams {
            tokio::spawn(health_check::run(Arc::clone(upstream), rx.clone()));
        }
        self.health_stop = Some(tx);
    }

    fn server_count(&self) -> usize {
        self.upstreams.iter().map(|u| u.servers.len()).sum()
    }
}

/// Binds every listener (the public ones and the admin one), so their addresses are known before
/// serving starts.
pub async fn bind(config: &Config) -> io::Result<Bound> {
    let file = &config.file;
    let live = Arc::new(LiveRoutes::default());
    let resolved = discovery::resolve(file, &discovery::Resolved::new()).await;
    let pools = Pools::install(&live, file.clone(), resolved, &[]);
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
                if total == 0 {
                    Err("no server addresses yet: its names have not resolved".to_string())
                } else if primaries + backups == 0 {
                    Err(format!("none of {total} servers is available"))
                } else {
                    Ok(json!({ "available": primaries, "backups_available": backups, "servers": total }))
                }
            }
        });
    }

    let access_log = access_log::AccessLog::open(&file.access_log)?;
    let mut listeners = Vec::new();
    let mut tls_listeners = Vec::new();
    for listener in &file.listeners {
        let addr = platform::config::parse_bind(listener.bind.get_ref())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = match &listener.tls {
            Some(files) => {
                let tls =
                    platform::tls::Tls::from_pem_files(&files.cert, &files.key).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("listener {}: TLS: {e}", listener.bind.get_ref()),
                        )
                    })?;
                tls_listeners.push((listener.bind.get_ref().clone(), tls.clone()));
                Some(tls)
            }
            None => None,
        };
        let state = Arc::new(ListenerState {
            routes: Arc::clone(&live),
            client_body_timeout: listener.client_body_timeout.0,
            access_log: Arc::clone(&access_log),
            scheme: if tls.is_some() { "https" } else { "http" },
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
            tls,
        };
        listeners.push((platform::bind(addr).await?, options, router));
    }
    let (reload_tx, reloads) = tokio::sync::mpsc::channel(4);
    let admin = match file.admin.bind.as_str() {
        "off" => None,
        bind => {
            let addr = platform::config::parse_bind(bind)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let router = platform::contract_router(
                status::router(Arc::clone(&live), reload_tx),
                &readiness,
                ErrorStyle::Json,
            );
            Some((platform::bind(addr).await?, router))
        }
    };
    Ok(Bound {
        listeners,
        access_log,
        admin,
        live,
        pools,
        readiness,
        common: config.common.clone(),
        reload_from: config.reload_source.clone(),
        reloads,
        tls_listeners,
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
        let mut pools = self.pools;
        pools.start_health_checks();
        tokio::spawn(maintain(
            pools,
            Arc::clone(&self.live),
            self.reload_from.clone(),
            self.reloads,
            self.tls_listeners,
            stop_rx.clone(),
        ));
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

/// Keeps the pools current until `stop`: SIGHUP (or the admin listener's `POST /reload`) reads
/// the config again (the file, or in env mode
/// the variables, and the files they name, such as htpasswd files) and swaps in its routes and
/// upstreams (listeners stay as they are; a config with errors is reported and the running one
/// kept), and names in server addresses are looked up again every
/// `resolve_interval`, rebuilding the pools when an answer changes.
async fn maintain(
    mut pools: Pools,
    live: Arc<LiveRoutes>,
    reload_from: Option<Source>,
    mut reloads: tokio::sync::mpsc::Receiver<status::ReloadReply>,
    tls_listeners: Vec<(String, platform::tls::Tls)>,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match reload_from {
        Some(_) => match signal(SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; config reload is off");
                None
            }
        },
        None => None,
    };
    let mut gauges = tokio::time::interval(std::time::Duration::from_secs(1));
    let next_lookup = |file: &FileConfig| {
        discovery::interval(file).map(|interval| tokio::time::Instant::now() + interval)
    };
    let mut lookup_at = next_lookup(&pools.file);
    loop {
        let trigger = tokio::select! {
            _ = gauges.tick() => {
                status::update_gauges(&live);
                continue;
            }
            Some(()) = async { hangups.as_mut()?.recv().await } => Trigger::Signal,
            Some(reply) = reloads.recv() => Trigger::Admin(reply),
            () = tokio::time::sleep_until(lookup_at.unwrap_or_else(tokio::time::Instant::now)), if lookup_at.is_some() => {
                lookup_at = next_lookup(&pools.file);
                Trigger::Lookup
            }
            _ = stop.wait_for(|s| *s) => return,
        };
        let reload = !matches!(trigger, Trigger::Lookup);
        let file = if reload {
            let read = reload_from
                .as_ref()
                .ok_or_else(|| "this gateway has no config source to read again".to_string())
                .and_then(|source| {
                    env_mode::file_config(source)
                        .map(|(file, _)| file)
                        .map_err(|e| e.to_string())
                })
                .and_then(|file| reload_certificates(&file, &tls_listeners).map(|()| file));
            match read {
                Ok(file) => file,
                Err(error) => {
                    tracing::error!(%error, "config reload failed; keeping the running config");
                    trigger.answer(Err(error));
                    continue;
                }
            }
        } else {
            pools.file.clone()
        };
        let resolved = discovery::resolve(&file, &pools.resolved).await;
        if !reload && resolved == pools.resolved {
            continue;
        }
        let previous = std::mem::take(&mut pools.upstreams);
        pools = Pools::install(&live, file, resolved, &previous);
        pools.start_health_checks();
        lookup_at = next_lookup(&pools.file);
        let (upstreams, servers) = (pools.upstreams.len(), pools.server_count());
        if reload {
            tracing::info!(upstreams, servers, "config reloaded");
            trigger.answer(Ok(format!(
                "config reloaded: {upstreams} upstreams, {servers} servers"
            )));
        } else {
            tracing::info!(
                upstreams,
                servers,
                "server addresses changed; pools rebuilt"
            );
        }
    }
}

/// Reads the certificates of the TLS listeners again (a listener keeps its address across
/// reloads; one whose `tls` was removed keeps its certificate until restarted).
fn reload_certificates(
    file: &FileConfig,
    tls_listeners: &[(String, platform::tls::Tls)],
) -> Result<(), String> {
    for (bind, tls) in tls_listeners {
        let files = file
            .listeners
            .iter()
            .find(|l| l.bind.get_ref() == bind)
            .and_then(|l| l.tls.as_ref());
        if let Some(files) = files {
            tls.reload(&files.cert, &files.key)
                .map_err(|e| format!("listener {bind}: TLS: {e}"))?;
        }
    }
    Ok(())
}

/// What made [`maintain`] act.
enum Trigger {
    Signal,
    /// `POST /reload` on the admin listener, waiting for the outcome.
    Admin(status::ReloadReply),
    Lookup,
}

impl Trigger {
    fn answer(self, outcome: Result<String, String>) {
        if let Trigger::Admin(reply) = self {
            let _ = reply.send(outcome);
        }
    }
}

/// Binds and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    bind(&config).await?.serve(shutdown).await
}
