//! `flotilla traces`: the trace collector of seed 003's Zipkin server, speaking Zipkin's v2 API so
//! the exporters people already run (Sleuth, py_zipkin, zipkin-js, OpenTelemetry's Zipkin
//! exporter) send to it unchanged, and the Zipkin UI's queries answer from it. Spans are kept in
//! an embedded SQLite file, by age and by count.
//!
//! Layout:
//! - [`span`]: Zipkin v2 spans, read strictly and normalised.
//! - [`store`]: the SQLite store, its queries, dependency links and retention; [`writer`]: the
//!   thread that stores ingested batches, several per transaction.
//! - [`routes`]: the HTTP API (ingest and queries).
//! - [`ui`]: the pages (search, one trace as a waterfall, the dependency graph).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use platform::config::{parse_bind, parse_duration};
use platform::{CommonConfig, ConfigError, ErrorStyle, Readiness, Setting, Source};
use tokio::net::TcpListener;

pub mod routes;
pub mod span;
pub mod store;
pub mod ui;
pub mod writer;

pub const BIND: Setting = Setting::bind("TRACES_BIND", "0.0.0.0:9411");
pub const DATA: Setting = Setting::new(
    "TRACES_DATA",
    "data",
    "PATH",
    "SQLite file the spans are kept in (`:memory:`: memory only)",
)
.default("data/traces.db");
pub const RETENTION: Setting = Setting::new(
    "TRACES_RETENTION",
    "retention",
    "DURATION",
    "how long spans are kept",
)
.default("168h");
pub const MAX_SPANS: Setting = Setting::new(
    "TRACES_MAX_SPANS",
    "max-spans",
    "COUNT",
    "most spans kept; past it the oldest go first",
)
.default("1000000");
pub const AUTOCOMPLETE_KEYS: Setting = Setting::new(
    "TRACES_AUTOCOMPLETE_KEYS",
    "autocomplete-keys",
    "KEYS",
    "tag keys the UI offers values for, comma-separated (Zipkin's AUTOCOMPLETE_KEYS)",
)
.default("http.method,http.status_code,error");

pub const SETTINGS: &[Setting] = &[BIND, DATA, RETENTION, MAX_SPANS, AUTOCOMPLETE_KEYS];

/// How often old spans are removed.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// `None`: in memory.
    pub data: Option<PathBuf>,
    pub retention: Duration,
    pub max_spans: u64,
    pub autocomplete_keys: Vec<String>,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let data = source.parse_or_default(&DATA, |v| {
            Ok(match v.trim() {
                ":memory:" => None,
                "" => return Err("a file path, or :memory:".to_string()),
                path => Some(PathBuf::from(path)),
            })
        })?;
        let retention = source.parse_or_default(&RETENTION, |v| {
            parse_duration(v).and_then(|d| {
                if d < Duration::from_secs(60) {
                    Err("a duration of at least 1m, such as 168h".to_string())
                } else {
                    Ok(d)
                }
            })
        })?;
        let max_spans = source.parse_or_default(&MAX_SPANS, |v| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1_000..=1_000_000_000).contains(n))
                .ok_or_else(|| "a whole number from 1000 to 1000000000".to_string())
        })?;
        let autocomplete_keys = source.parse_or_default(&AUTOCOMPLETE_KEYS, |v| {
            Ok(v.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect())
        })?;
        Ok(Config {
            bind: source.parse_or_default(&BIND, parse_bind)?,
            data,
            retention,
            max_spans,
            autocomplete_keys,
            common: CommonConfig::from_source(source)?,
        })
    }
}

/// The collector's routes, wrapped in the service contract.
pub fn app(shared: routes::Shared, readiness: &Readiness) -> platform::Contracted {
    platform::contract_router(
        routes::zipkin(shared.clone()).merge(ui::pages(shared)),
        readiness,
        ErrorStyle::Json,
    )
}

/// Removes old spans every [`PRUNE_INTERVAL`], until the process ends.
async fn prune_every(store: Arc<store::Store>, retention: Duration, max_spans: u64) {
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = Arc::clone(&store);
        let pruned = tokio::task::spawn_blocking(move || {
            store.prune(
                routes::now_micros(),
                retention.as_micros() as u64,
                max_spans,
            )
        })
        .await;
        match pruned {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "old spans removed"),
            Ok(Err(error)) => tracing::warn!(%error, "cannot remove old spans"),
        }
    }
}

/// Serves until `shutdown` resolves, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), TracesError> {
    let readiness = Readiness::new();
    let store = Arc::new(store::Store::open(config.data.as_deref())?);
    let pruner = tokio::spawn(prune_every(
        Arc::clone(&store),
        config.retention,
        config.max_spans,
    ));
    let writer = writer::Writer::start(Arc::clone(&store))?;
    let router = app(
        routes::Shared {
            writer,
            store,
            autocomplete_keys: Arc::new(config.autocomplete_keys.clone()),
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
    pruner.abort();
    Ok(served?)
}

/// Why the collector could not run.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}
