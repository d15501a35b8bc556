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
//! - `client`: the HTTP client to upstream servers: connections pooled per worker thread, driven
//!   by the request using them.
//! - `compress`: brotli, zstd and gzip for the routes that ask for it.
//! - `auth`: basic authentication from htpasswd files.
//! - `limits`: request rate per client address; (with `body`) the largest request body.
//! - `error`: the gateway's own error answers.
//! - `access_log`: one JSON line per request, written off the request path.
//! - `static_files`: routes that serve a directory.
//! - `status`: the admin listener's `/status` (JSON) and status page.
//!
//! Connections are served on worker threads of the gateway's own (`server`: one thread per core,
//! as nginx's worker processes); the main thread accepts them and runs health checks, lookups,
//! reloads and the admin listener. The request path is the platform's contract layers (request id, metrics,
//! panics: [`platform::WithRequestLayers`]) around one handler, `proxy::Proxy`; the edge features
//! (rate limits, auth, static files, compression, the access log) are steps of that handler.

mod access_log;
mod auth;
pub mod config;
pub mod env_mode;
pub mod error;

mod body;
mod budget;
mod client;
mod compress;
mod discovery;
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod health_check;
mod limits;
mod normalize;
mod proxy;
mod routing;
mod server;
mod static_files;
mod status;
mod target;
mod upstream;
mod validate;
mod wire;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use platform::{CommonConfig, ConfigError, ErrorStyle, Readiness, Source};
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
        let (status, body) = runtime.block_on(platform::health::call_with(
            http::Method::POST,
            &url,
            &[(status::ADMIN_HEADER, "1")],
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
    listeners: Vec<PublicListener>,
    shared: Shared,
    admin: Option<(TcpListener, Router)>,
    pools: Pools,
    readiness: Readiness,
    /// Where to read the config again on SIGHUP.
    reload_from: Option<Source>,
    /// SIGHUP, listened for from before any listener serves: a SIGHUP that arrived between the
    /// "listening" line and the start of listening for it would end the process (its default).
    hangups: Option<tokio::signal::unix::Signal>,
    /// `POST /reload` requests from the admin listener.
    reloads: tokio::sync::mpsc::Receiver<status::ReloadReply>,
}

/// What every public listener shares, including those a reload adds.
#[derive(Clone)]
struct Shared {
    live: Arc<LiveRoutes>,
    access_log: Arc<access_log::AccessLog>,
    workers: server::workers::Workers,
    common: CommonConfig,
}

/// A public listener, bound and ready to serve.
struct PublicListener {
    addr: SocketAddr,
    listener: TcpListener,
    options: server::Options,
    service: platform::WithRequestLayers<proxy::Proxy>,
}

impl Shared {
    /// Binds the listener `config` describes (reading its TLS files).
    async fn open(&self, config: &config::Listener) -> io::Result<PublicListener> {
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
        let service = platform::WithRequestLayers(proxy::Proxy::new(state));
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
    let threads = config
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let workers = server::workers::Workers::start(threads, "gateway-worker", || async {
        // Idle upstream connections are this thread's: close those that expired or that their
        // server closed, even when no request comes to notice.
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            client::sweep();
        }
    })?;
    let shared = Shared {
        live: Arc::clone(&live),
        access_log,
        workers,
        common: config.common.clone(),
    };
    let mut listeners = Vec::new();
    for listener in &file.listeners {
        listeners.push(shared.open(listener).await?);
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
    let hangups = match &config.reload_source {
        Some(_) => {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(hangups) => Some(hangups),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGHUP; config reload is off");
                    None
                }
            }
        }
        None => None,
    };
    Ok(Bound {
        listeners,
        shared,
        admin,
        pools,
        readiness,
        reload_from: config.reload_source.clone(),
        hangups,
        reloads,
    })
}

impl Bound {
    /// The public listeners' addresses, in config order.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.listener.local_addr().ok())
            .collect()
    }

    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains every listener.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut pools = self.pools;
        pools.start_health_checks();
        let mut listeners = Listeners {
            shared: self.shared.clone(),
            running: Vec::new(),
            tasks: tokio::task::JoinSet::new(),
            stop_all: stop_rx.clone(),
        };
        for listener in self.listeners {
            listeners.start(listener);
        }
        let mut maintained = tokio::spawn(maintain(
            pools,
            listeners,
            self.reload_from.clone(),
            self.hangups,
            self.reloads,
            stop_rx.clone(),
        ));
        let admin = self.admin.map(|(listener, router)| {
            let mut stop = stop_rx.clone();
            tokio::spawn(platform::serve(
                listener,
                router,
                self.shared.common.serve_options(),
                self.readiness.clone(),
                async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                },
            ))
        });
        self.readiness.started();
        let mut outcome = tokio::select! {
            () = shutdown => Ok(()),
            // A listener that fails on its own takes the gateway down rather than half-serving.
            result = &mut maintained => flatten(result),
        };
        let _ = stop_tx.send(true);
        if !maintained.is_finished() {
            outcome = outcome.and(flatten(maintained.await));
        }
        if let Some(admin) = admin {
            outcome = outcome.and(flatten(admin.await));
        }
        let access_log = self.shared.access_log;
        let _ = tokio::task::spawn_blocking(move || access_log.finish()).await;
        outcome
    }
}

fn flatten(joined: Result<io::Result<()>, tokio::task::JoinError>) -> io::Result<()> {
    joined.map_err(io::Error::other).and_then(|r| r)
}

/// The public listeners running, by address. A reload adds the listeners its config adds and
/// drains those it removes; a listener whose address stays keeps running as it is (its
/// certificates are read again).
struct Listeners {
    shared: Shared,
    running: Vec<Running>,
    tasks: tokio::task::JoinSet<(SocketAddr, io::Result<()>)>,
    /// The gateway is stopping: every listener drains.
    stop_all: watch::Receiver<bool>,
}

struct Running {
    /// As configured (port 0 stays 0), to match against a new config.
    addr: SocketAddr,
    /// As bound.
    local: SocketAddr,
    tls: Option<platform::tls::Tls>,
    /// Sending (or dropping) it drains this listener alone.
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Listeners {
    fn start(&mut self, public: PublicListener) {
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
    async fn prepare(&self, file: &FileConfig) -> Result<Vec<PublicListener>, String> {
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
    fn apply(&mut self, file: &FileConfig, added: Vec<PublicListener>) -> String {
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
    async fn ended(&mut self) -> io::Result<()> {
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
    async fn drained(mut self) -> io::Result<()> {
        let mut outcome = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(error) = joined.map_err(io::Error::other).and_then(|(_, r)| r) {
                outcome = Err(error);
            }
        }
        outcome
    }
}

/// Keeps the pools and listeners current until `stop`, then drains the listeners.
///
/// SIGHUP (or the admin listener's `POST /reload`) reads the config again (the file, or in env
/// mode the variables, and the files they name: htpasswd files, certificates) and puts it in
/// force at once: routes and upstreams are swapped, listeners added and removed. A config with
/// errors, or a new listener that cannot be bound, is reported and the running config kept.
/// Names in server addresses are looked up again every `resolve_interval`, rebuilding the pools
/// when an answer changes.
async fn maintain(
    mut pools: Pools,
    mut listeners: Listeners,
    reload_from: Option<Source>,
    mut hangups: Option<tokio::signal::unix::Signal>,
    mut reloads: tokio::sync::mpsc::Receiver<status::ReloadReply>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let live = Arc::clone(&listeners.shared.live);
    let mut gauges = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut ticks: u64 = 0;
    let next_lookup = |file: &FileConfig| {
        discovery::interval(file).map(|interval| tokio::time::Instant::now() + interval)
    };
    let mut lookup_at = next_lookup(&pools.file);
    loop {
        let trigger = tokio::select! {
            _ = gauges.tick() => {
                status::update_gauges(&live);
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    // Off the request path: rate limiters forget clients back at their burst.
                    live.current().sweep_rate_limits();
                }
                continue;
            }
            Some(()) = async { hangups.as_mut()?.recv().await } => Trigger::Signal,
            Some(reply) = reloads.recv() => Trigger::Admin(reply),
            () = tokio::time::sleep_until(lookup_at.unwrap_or_else(tokio::time::Instant::now)), if lookup_at.is_some() => {
                lookup_at = next_lookup(&pools.file);
                Trigger::Lookup
            }
            failed = listeners.ended() => return failed,
            _ = stop.wait_for(|s| *s) => break,
        };
        let reload = !matches!(trigger, Trigger::Lookup);
        let (file, added) = if reload {
            let read = match &reload_from {
                None => Err("this gateway has no config source to read again".to_string()),
                Some(source) => env_mode::file_config(source)
                    .map(|(file, _)| file)
                    .map_err(|e| e.to_string()),
            };
            let prepared = match read {
                Ok(file) => listeners.prepare(&file).await.map(|added| (file, added)),
                Err(error) => Err(error),
            };
            match prepared {
                Ok(prepared) => prepared,
                Err(error) => {
                    tracing::error!(%error, "config reload failed; keeping the running config");
                    trigger.answer(Err(error));
                    continue;
                }
            }
        } else {
            (pools.file.clone(), Vec::new())
        };
        let resolved = discovery::resolve(&file, &pools.resolved).await;
        if !reload && resolved == pools.resolved {
            continue;
        }
        let listener_changes = listeners.apply(&file, added);
        let previous = std::mem::take(&mut pools.upstreams);
        pools = Pools::install(&live, file, resolved, &previous);
        pools.start_health_checks();
        lookup_at = next_lookup(&pools.file);
        let (upstreams, servers) = (pools.upstreams.len(), pools.server_count());
        if reload {
            tracing::info!(upstreams, servers, listeners = %listener_changes, "config reloaded");
            let listener_changes = if listener_changes.is_empty() {
                String::new()
            } else {
                format!(", listeners {listener_changes}")
            };
            trigger.answer(Ok(format!(
                "config reloaded: {upstreams} upstreams, {servers} servers{listener_changes}"
            )));
        } else {
            tracing::info!(
                upstreams,
                servers,
                "server addresses changed; pools rebuilt"
            );
        }
    }
    listeners.drained().await
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
