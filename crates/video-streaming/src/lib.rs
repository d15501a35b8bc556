//! `flotilla video-streaming`: FlixTube's streaming service (seed 001). `GET /video?id=` looks
//! the video up in its catalog and streams it from video-storage, passing ranges and conditions
//! through (so players seek) and answering 503 at once when storage is down; a JSON API adds,
//! lists, shows and deletes videos; pages list them, play one and upload new ones.
//!
//! Layout:
//! - `catalog`: the videos' metadata and viewing history (SQLite).
//! - `storage`: calls to video-storage through the platform's circuit breaker.
//! - `upload`: a multipart upload streamed to storage, probed, then catalogued.
//! - `media`: duration and a still from ffprobe/ffmpeg, when installed.
//! - `events`: `viewed` events, recorded in the history table.
//! - `api`, `pages`: the routes; `error`: the one error type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use platform::{CommonConfig, ConfigError, ErrorStyle, Readiness, Setting, Source};
use tokio::net::TcpListener;

mod api;
pub mod catalog;
mod error;
pub mod events;
mod media;
mod pages;
mod storage;
mod upload;

pub use catalog::{Catalog, Video};
pub use error::VideoError;
pub use storage::StorageClient;

pub const BIND: Setting = Setting::bind("VIDEO_STREAMING_BIND", "0.0.0.0:3000");
/// The seed's `PORT` (listen on all interfaces on it, unless `VIDEO_STREAMING_BIND` is given).
pub const PORT: Setting = platform::config::SEED_PORT;
pub const STORAGE_URL: Setting = Setting::new(
    "VIDEO_STORAGE_URL",
    "storage-url",
    "URL",
    "video-storage's base URL, such as http://video-storage:3000 (or the seed's \
     VIDEO_STORAGE_HOST and VIDEO_STORAGE_PORT)",
);
pub const STORAGE_HOST: Setting = Setting::new(
    "VIDEO_STORAGE_HOST",
    "storage-host",
    "HOST",
    "the seed's video-storage host (with VIDEO_STORAGE_PORT)",
)
.env_only();
pub const STORAGE_PORT: Setting = Setting::new(
    "VIDEO_STORAGE_PORT",
    "storage-port",
    "PORT",
    "the seed's video-storage port (default 80)",
)
.env_only();
pub const DB_URL: Setting = Setting::new(
    "VIDEO_DB_URL",
    "db-url",
    "URL",
    "the video catalog: sqlite://FILE",
)
.default("sqlite://./data/video.db");
pub const DBHOST: Setting = Setting::new(
    "DBHOST",
    "dbhost",
    "URL",
    "the seed's MongoDB (not used: set VIDEO_DB_URL)",
)
.env_only();
pub const DBNAME: Setting = Setting::new(
    "DBNAME",
    "dbname",
    "NAME",
    "the seed's MongoDB database (not used: set VIDEO_DB_URL)",
)
.env_only();
pub const MAX_UPLOAD: Setting = Setting::new(
    "VIDEO_MAX_UPLOAD",
    "max-upload",
    "BYTES",
    "largest upload, in bytes (suffixes k, M, G: powers of 1024)",
)
.default("4G");

pub const SETTINGS: &[Setting] = &[
    BIND,
    PORT,
    STORAGE_URL,
    STORAGE_HOST,
    STORAGE_PORT,
    DB_URL,
    DBHOST,
    DBNAME,
    MAX_UPLOAD,
];

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub storage_url: String,
    pub catalog: PathBuf,
    pub max_upload: u64,
    /// How calls to storage are protected.
    pub storage_calls: platform::CallPolicy,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        for seed in [&DBHOST, &DBNAME] {
            if let Some(found) = source.get(seed)? {
                return Err(ConfigError::Other(format!(
                    "{} is the seed's MongoDB setting; Flotilla keeps the video catalog in \
                     SQLite: set VIDEO_DB_URL=sqlite://FILE (default sqlite://./data/video.db) \
                     and unset {}",
                    found.origin, seed.env
                )));
            }
        }
        let bind = platform::config::bind_or_seed_port(source, &BIND)?;
        let storage_url = match source.parse(&STORAGE_URL, |v| {
            let v = v.trim().trim_end_matches('/');
            let parsed = reqwest::Url::parse(v).map_err(|_| "an http:// URL".to_string())?;
            if parsed.scheme() != "http" && parsed.scheme() != "https" || parsed.host().is_none() {
                return Err("an http:// URL".to_string());
            }
            Ok(v.to_string())
        })? {
            Some(url) => url,
            None => {
                let host = source
                    .parse(&STORAGE_HOST, |v| Ok(v.trim().to_string()))?
                    .ok_or_else(|| ConfigError::Missing {
                        origin: STORAGE_URL.env.to_string(),
                        help: "where video-storage answers, such as http://video-storage:3000"
                            .into(),
                    })?;
                let port = source
                    .parse(&STORAGE_PORT, |v| {
                        v.trim()
                            .parse::<u16>()
                            .map_err(|_| "a port number".to_string())
                    })?
                    .unwrap_or(80);
                format!("http://{host}:{port}")
            }
        };
        let catalog = source.parse_or_default(&DB_URL, |v| {
            let v = v.trim();
            match v.strip_prefix("sqlite://") {
                Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
                _ if v.starts_with("mysql://") || v.starts_with("mariadb://") => Err(
                    "sqlite://FILE: the video catalog is SQLite only for now (MariaDB is not \
                     supported yet)"
                        .to_string(),
                ),
                _ => Err("sqlite://FILE".to_string()),
            }
        })?;
        let common = CommonConfig::from_source(source)?;
        Ok(Config {
            bind,
            storage_url,
            catalog,
            max_upload: source.parse_or_default(&MAX_UPLOAD, platform::config::parse_size)?,
            storage_calls: common.calls.policy(
                "video-storage",
                platform::CallPolicy {
                    timeout: storage::HEAD_TIMEOUT,
                    ..platform::CallPolicy::default()
                },
            )?,
            common,
        })
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) catalog: Catalog,
    pub(crate) storage: StorageClient,
    pub(crate) events: Arc<dyn events::Events>,
    pub(crate) max_upload: u64,
}

/// Now, as the catalog writes times: RFC 3339 in UTC with milliseconds.
pub(crate) fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The routes, wrapped in the service contract.
pub fn app(
    catalog: Catalog,
    storage: StorageClient,
    max_upload: u64,
    readiness: &Readiness,
) -> platform::Contracted {
    let state = Arc::new(AppState {
        events: Arc::new(events::HistoryTable(catalog.clone())),
        catalog,
        storage,
        max_upload,
    });
    // Room for the form's other parts around the file.
    let form_limit = DefaultBodyLimit::max(
        usize::try_from(max_upload)
            .unwrap_or(usize::MAX)
            .saturating_add(64 * 1024),
    );
    let routes = Router::new()
        .route("/video", get(api::stream).head(api::stream))
        .route("/thumbnail", get(api::thumbnail))
        .route(
            "/api/videos",
            get(api::list).post(api::create).layer(form_limit),
        )
        .route("/api/videos/{id}", get(api::one).delete(api::delete))
        .route("/", get(pages::list))
        .route("/watch", get(pages::watch))
        .route(
            "/upload",
            get(pages::upload_form)
                .post(pages::upload)
                .layer(form_limit),
        )
        .with_state(state);
    platform::contract_router(routes, readiness, ErrorStyle::Json)
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves until `shutdown` resolves, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let catalog = Catalog::open(&config.catalog)?;
    let storage = StorageClient::new(&config.storage_url, config.storage_calls.clone());
    let readiness = Readiness::new();
    let router = app(catalog, storage, config.max_upload, &readiness);
    readiness.started();
    platform::serve(
        listener,
        router,
        config.common.serve_options(),
        readiness,
        shutdown,
    )
    .await?;
    Ok(())
}
