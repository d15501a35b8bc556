//! `flotilla registry`: the service registry of seed 004's Eureka, speaking Eureka's REST API so
//! the clients people already run (Spring Cloud, py-eureka-client, eureka-js-client) register and
//! discover through it unchanged, and pushing every change to Flotilla's own watchers at once
//! instead of Eureka's 30–90 s.
//!
//! Instances hold leases that their heartbeats renew; a lease that runs out is evicted. The state
//! lives in memory, optionally saved to SQLite (`REGISTRY_DATA`), and is replicated to peer
//! registries (`REGISTRY_PEERS`) as Eureka replicates it.
//!
//! Layout:
//! - [`instance`]: the instance document, read from JSON or XML and checked; [`xml`]: XML in and
//!   out.
//! - [`registry`]: the state, leases, delta and version; [`render`]: the documents it answers.
//! - [`routes`]: the Eureka REST operations and the watch; [`dashboard`]: the page at `/`.
//! - [`peers`]: replication to other registries; [`store`]: saving to SQLite.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use platform::config::{parse_bind, parse_bool, parse_duration};
use platform::{CommonConfig, ConfigError, ErrorStyle, Readiness, Setting, Source};
use tokio::net::TcpListener;

pub mod dashboard;
pub mod instance;
pub mod peers;
pub mod registry;
pub mod render;
pub mod routes;
pub mod store;
pub mod xml;

pub use registry::{Leases, Registry};

pub const BIND: Setting = Setting::bind("REGISTRY_BIND", "0.0.0.0:8761");
pub const DATA: Setting = Setting::new(
    "REGISTRY_DATA",
    "data",
    "PATH",
    "SQLite file to save the registry in, so a restart does not empty it (default: memory only)",
);
pub const PEERS: Setting = Setting::new(
    "REGISTRY_PEERS",
    "peers",
    "URLS",
    "the other registries, comma-separated (http://r2:8761/eureka/,...), to replicate to",
);
pub const SELF_PRESERVATION: Setting = Setting::new(
    "REGISTRY_SELF_PRESERVATION",
    "self-preservation",
    "BOOL",
    "stop evicting when fewer than 85% of the expected heartbeats arrive (Eureka's default; off here)",
)
.default("false");
pub const EVICTION_INTERVAL: Setting = Setting::new(
    "REGISTRY_EVICTION_INTERVAL",
    "eviction-interval",
    "DURATION",
    "how often to remove instances whose lease has run out",
)
.default("5s");

pub const SETTINGS: &[Setting] = &[BIND, DATA, PEERS, SELF_PRESERVATION, EVICTION_INTERVAL];

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data: Option<PathBuf>,
    pub peers: Vec<reqwest::Url>,
    pub self_preservation: bool,
    pub eviction_interval: Duration,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let eviction_interval = source.parse_or_default(&EVICTION_INTERVAL, |v| {
            parse_duration(v).and_then(|d| {
                if d.is_zero() || d > Duration::from_secs(3600) {
                    Err("a duration from 1ms to 1h, such as 5s".to_string())
                } else {
                    Ok(d)
                }
            })
        })?;
        Ok(Config {
            bind: source.parse_or_default(&BIND, parse_bind)?,
            data: source.parse(&DATA, |v| Ok(PathBuf::from(v)))?,
            peers: source.parse(&PEERS, peers::parse_urls)?.unwrap_or_default(),
            self_preservation: source.parse_or_default(&SELF_PRESERVATION, parse_bool)?,
            eviction_interval,
            common: CommonConfig::from_source(source)?,
        })
    }
}

/// The registry's routes (Eureka's API and the dashboard), wrapped in the service contract.
pub fn app(shared: routes::Shared, readiness: &Readiness) -> platform::Contracted {
    let pages = Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .with_state(shared.clone());
    platform::contract_router(
        routes::eureka(shared).merge(pages),
        readiness,
        ErrorStyle::Json,
    )
}

/// Evicts expired leases every `interval`, until the process ends.
async fn evict_every(registry: Arc<Registry>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        registry.evict();
    }
}

/// Serves until `shutdown` resolves, then drains (and saves, with `REGISTRY_DATA`).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RegistryError> {
    let readiness = Readiness::new();
    let registry = Registry::new(Leases {
        self_preservation: config.self_preservation,
    });
    let store = match &config.data {
        Some(path) => {
            let store = store::Store::open(path)?;
            let saved = store.load()?;
            tracing::info!(instances = saved.len(), path = %path.display(), "registry restored");
            registry.restore(saved);
            Some(store)
        }
        None => None,
    };
    if !config.peers.is_empty() {
        peers::sync(&config.peers, &registry).await;
    }
    let peers = peers::Peers::start(config.peers.clone(), registry.clone());
    let evictor = tokio::spawn(evict_every(registry.clone(), config.eviction_interval));
    let (stopped, stop) = tokio::sync::oneshot::channel::<()>();
    let saver = store.map(|store| {
        tokio::spawn(store::keep_saved(store, registry.clone(), async {
            let _ = stop.await;
        }))
    });
    let router = app(
        routes::Shared {
            registry: registry.clone(),
            peers,
        },
        &readiness,
    );
    readiness.started();
    let served = platform::serve(
        listener,
        router,
        config.common.serve_options(),
        readiness,
        shutdown,
    )
    .await;
    evictor.abort();
    let _ = stopped.send(());
    if let Some(saver) = saver {
        let _ = saver.await;
    }
    Ok(served?)
}

/// Why the registry could not run.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}
