//! `flotilla gateway`: the reverse proxy in front of every tier, replacing the seeds' nginx.
//!
//! Requests are matched to a route by host and path prefix and sent to a server of the route's
//! upstream pool, picked by the pool's policy among the servers that are up (active health checks,
//! passive failure counting as nginx, `max_conns`, backups only when nothing else is up). A
//! request that fails on one server is retried on another when that is safe, within a retry
//! budget. Bodies stream both ways; WebSocket upgrades pass through. On SIGTERM the gateway stops
//! accepting, finishes what is in flight and exits.
//!
//! Layout, from the config to the wire:
//! - [`config`]: the config as data (TOML, `${VAR}` expansion, errors with file, line and key);
//!   [`env_mode`]: the gateway's settings, and the seeds' nginx variables as a config;
//!   `validate`: checks beyond the types; [`load`]: the load step (parse, check, open the files a
//!   config names) both go through.
//! - `routing`: the route table in force (swapped on reload), built from a loaded config;
//!   `upstream`: a pool at run time (servers, health state, balancing policies); `discovery`:
//!   names in server addresses, looked up again and again; `health_check`: active checks.
//! - `client`: HTTP/1.1 to upstream servers, connections pooled per worker thread; `wire`: the
//!   one HTTP/1 grammar it and the server loop parse with.
//! - `proxy`: the request path (its steps: `target` and `normalize` for what a request asks for,
//!   `limits`, `auth`, `static_files`, the forwarding with its retries, `headers`, `body`,
//!   `compress`, `access_log`); `error`: the gateway's own answers.
//! - `server`: the gateway's listeners (its HTTP/1 loop, HTTP/2 on hyper, TLS, worker threads,
//!   tunnels, zero-copy files); `listeners`: which listeners run, added and drained on reload;
//!   `reload`: keeping routes, pools and listeners current; `status`: the admin listener's pages.
//! - `coarse_timer`, `per_thread`: a cheap clock and timer for deadlines seconds away, and state
//!   in per-thread slots (the access log's buffers, the timer's lists).
//! - `fuzzing`: entry points for the differential tests (not an API).
//!
//! Connections are served on worker threads of the gateway's own (`server`: one thread per core,
//! as nginx's worker processes); the main thread accepts them and runs health checks, lookups,
//! reloads and the admin listener. The request path is the platform's contract layers (request id,
//! metrics, panics: [`platform::RequestLayers`]) around one handler, `proxy::Proxy`.

mod access_log;
mod auth;
mod body;
mod client;
mod coarse_timer;
mod compress;
pub mod config;
mod discovery;
pub mod env_mode;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod health_check;
mod limits;
mod listeners;
pub mod load;
mod normalize;
mod per_thread;
mod proxy;
mod reload;
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

use platform::{CommonConfig, ConfigError, ErrorStyle, Readiness, Source};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::FileConfig;
pub use env_mode::SETTINGS;
pub use load::Loaded;

use crate::listeners::{Listeners, PublicListener, Shared};
use crate::reload::{Pools, maintain};
use crate::routing::LiveRoutes;

#[derive(Debug, Clone)]
pub struct Config {
    /// The config in force at start: checked, its files opened.
    pub loaded: Loaded,
    /// Where the config was read from (environment and flags), to read it again on SIGHUP;
    /// `None` when it cannot be re-read (tests).
    pub reload_source: Option<Source>,
    pub worker_threads: Option<usize>,
    pub print_config: bool,
    /// `--reload`: ask the running gateway to read its config again instead of starting one.
    pub reload: bool,
    pub common: CommonConfig,
}

/// Why `--reload` could not reload the running gateway.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the admin listener is off; send the gateway SIGHUP instead")]
    AdminOff,
    #[error("admin.bind: {0}")]
    AdminBind(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: http::StatusCode,
        body: String,
    },
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        Ok(Config {
            loaded: env_mode::load(source)?,
            reload_source: Some(source.clone()),
            worker_threads: env_mode::worker_threads(source)?,
            print_config: source.switch(&env_mode::PRINT_CONFIG)?,
            reload: source.switch(&env_mode::RELOAD)?,
            common: CommonConfig::from_source(source)?,
        })
    }

    /// A config to run `loaded` with the platform's defaults, for tests and embedding.
    pub fn new(loaded: Loaded, common: CommonConfig) -> Self {
        Config {
            loaded,
            reload_source: None,
            worker_threads: None,
            print_config: false,
            reload: false,
            common,
        }
    }

    /// `--reload`: asks the gateway running with this config, through its admin listener, to
    /// read its config again; what it answered.
    pub fn request_reload(&self) -> Result<String, ReloadError> {
        let bind = &self.loaded.file.admin.bind;
        if bind == "off" {
            return Err(ReloadError::AdminOff);
        }
        let mut addr = platform::config::parse_bind(bind).map_err(ReloadError::AdminBind)?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let url = format!("http://{addr}/reload");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ReloadError::Unreachable(e.to_string()))?;
        let (status, body) = runtime
            .block_on(platform::health::call_with(
                http::Method::POST,
                &url,
                &[(status::ADMIN_HEADER, "1")],
                std::time::Duration::from_secs(30),
            ))
            .map_err(ReloadError::Unreachable)?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(ReloadError::Refused {
                url,
                status,
                body: body.trim().to_string(),
            })
        }
    }

    /// The effective config as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(&self.loaded.file)
            .unwrap_or_else(|e| format!("# cannot print: {e}\n"));
        format!(
            "# effective gateway config, from {}\n{body}",
            self.loaded.origin
        )
    }
}

/// A gateway whose listeners are bound, ready to serve.
pub struct Bound {
    listeners: Vec<PublicListener>,
    shared: Shared,
    admin: Option<(TcpListener, platform::Contracted)>,
    pools: Pools,
    readiness: Readiness,
    /// Where to read the config again on SIGHUP.
    reload_from: Option<Source>,
    /// SIGHUP, listened for from before any listener serves: a SIGHUP that arrived between the
    /// "listening" line and the start of listening for it would end the process (its default).
    hangups: Option<tokio::signal::unix::Signal>,
    /// `POST /reload` requests from the admin listener.
    reloads: tokio::sync::mpsc::Receiver<status::ReloadReply>,
    /// The registry's instances, when the config names a registry.
    registry: Option<watch::Receiver<platform::registration::watch::Instances>>,
}

/// Binds every listener (the public ones and the admin one), so their addresses are known before
/// serving starts.
pub async fn bind(config: &Config) -> io::Result<Bound> {
    let file = &config.loaded.file;
    let live = Arc::new(LiveRoutes::default());
    let registry = match &file.registry {
        Some(section) => Some(follow_registry(&section.url).await),
        None => None,
    };
    let resolved = discovery::resolve(file, &discovery::Resolved::new()).await;
    let resolved = match &registry {
        Some(instances) => discovery::with_registry(resolved, &instances.borrow()),
        None => resolved,
    };
    let pools = Pools::install(&live, config.loaded.clone(), resolved, &[]);
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
    // One thread per core, each a single-threaded runtime, as nginx's worker processes: a
    // connection stays on one thread from accept to close, with everything its requests use.
    let workers = tokio_util::task::LocalPoolHandle::new(threads.max(1));
    for worker in 0..threads.max(1) {
        // Idle upstream connections are this thread's: close those that expired or that their
        // server closed, even when no request comes to notice.
        drop(workers.spawn_pinned_by_idx(
            || async {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    every.tick().await;
                    client::sweep();
                }
            },
            worker,
        ));
    }
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
        registry,
    })
}

/// Starts following the registry at `urls` (checked when the config was loaded), and waits up
/// to two seconds for its first answer, so a gateway that starts with the registry up routes to
/// its instances from its first request.
async fn follow_registry(urls: &str) -> watch::Receiver<platform::registration::watch::Instances> {
    let urls = platform::registration::parse_urls(urls).unwrap_or_default();
    let (sender, mut instances) = watch::channel(Default::default());
    tokio::spawn(platform::registration::watch::follow(urls, sender));
    let first = tokio::time::timeout(std::time::Duration::from_secs(2), instances.changed());
    if first.await.is_err() {
        tracing::warn!(
            "no answer from the registry yet; its services have no servers until it answers"
        );
    }
    instances.mark_unchanged();
    instances
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
        // Self-registration (FLOTILLA_REGISTRY_URL) under the first public listener's address:
        // that is where routers send work. Refused before serving when no address can be chosen.
        let registration = self.shared.common.serve_options().registration;
        let registered = match (&registration, self.listeners.first()) {
            (Some(config), Some(first)) => Some(
                platform::registration::start(
                    config,
                    "gateway",
                    first.listener.local_addr()?,
                    self.readiness.clone(),
                )
                .map_err(io::Error::other)?,
            ),
            _ => None,
        };
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
            self.registry,
            stop_rx.clone(),
        ));
        let admin = self.admin.map(|(listener, router)| {
            let mut stop = stop_rx.clone();
            // The admin listener is not what routers should send work to: never registered.
            let options = platform::ServeOptions {
                registration: None,
                ..self.shared.common.serve_options()
            };
            tokio::spawn(platform::serve(
                listener,
                router,
                options,
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
        // Out of the registry before the listeners start their shutdown delay and drain.
        if let Some(registered) = registered {
            registered.leave().await;
        }
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

/// Binds and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    bind(&config).await?.serve(shutdown).await
}
