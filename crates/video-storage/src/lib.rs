//! `flotilla video-storage`: FlixTube's storage service (seed 001). It keeps the video files
//! and streams them: `GET /video?path=` with byte ranges (so players can seek) and conditional
//! requests, `HEAD`, `PUT` (a streamed, size-limited, all-or-nothing upload), `DELETE`, and
//! `GET /videos` (a listing). The objects live in a local directory by default, or in an Azure
//! Blob container (the seed's backend, `STORAGE_ACCOUNT_NAME`/`STORAGE_ACCESS_KEY`) or an S3
//! bucket, all through the `object_store` crate.
//!
//! Layout:
//! - [`key`]: client paths checked and mapped to store paths.
//! - [`store`]: the backends, and the local directory's symlink check; `connector`: the
//!   cloud backends' HTTP client.
//! - `read`: `GET`/`HEAD`, conditions and ranges.
//! - `upload`: `PUT`, streamed into a multipart upload.
//! - `routes`: the router; `error`: the one error type.

use std::net::SocketAddr;
use std::path::PathBuf;

use object_store::aws::AmazonS3ConfigKey;
use platform::{CommonConfig, ConfigError, ErrorStyle, Readiness, Setting, Source};
use tokio::net::TcpListener;

mod connector;
mod error;
pub mod key;
mod read;
mod routes;
pub mod store;
mod upload;

pub use error::StorageError;
pub use routes::{Listing, MAX_LISTED, MAX_PAGE, ObjectInfo};
pub use store::{Backend, Store};
pub use upload::IDLE_TIMEOUT;

pub const BIND: Setting = Setting::bind("VIDEO_STORAGE_BIND", "0.0.0.0:3000");
/// The seed's `PORT` (listen on all interfaces on it, unless `VIDEO_STORAGE_BIND` is given).
pub const PORT: Setting = platform::config::SEED_PORT;
pub const STORE: Setting = Setting::new(
    "VIDEO_STORE",
    "store",
    "WHERE",
    "where the videos live: a directory, az://CONTAINER or s3://BUCKET (default ./data/videos, \
     or az://videos when STORAGE_ACCOUNT_NAME is set)",
);
pub const STORE_ENDPOINT: Setting = Setting::new(
    "VIDEO_STORE_ENDPOINT",
    "store-endpoint",
    "URL",
    "another endpoint for Azure or S3 (Azurite, MinIO); http:// allowed",
);
pub const ACCOUNT: Setting = Setting::new(
    "STORAGE_ACCOUNT_NAME",
    "storage-account-name",
    "NAME",
    "Azure storage account (the seed's name)",
)
.env_only();
pub const ACCESS_KEY: Setting = Setting::new(
    "STORAGE_ACCESS_KEY",
    "storage-access-key",
    "KEY",
    "Azure storage account key (the seed's name)",
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
    STORE,
    STORE_ENDPOINT,
    ACCOUNT,
    ACCESS_KEY,
    MAX_UPLOAD,
];

/// The standard AWS variables an S3 store takes.
const AWS_VARIABLES: &[(&str, AmazonS3ConfigKey)] = &[
    ("AWS_ACCESS_KEY_ID", AmazonS3ConfigKey::AccessKeyId),
    ("AWS_SECRET_ACCESS_KEY", AmazonS3ConfigKey::SecretAccessKey),
    ("AWS_SESSION_TOKEN", AmazonS3ConfigKey::Token),
    ("AWS_DEFAULT_REGION", AmazonS3ConfigKey::DefaultRegion),
    ("AWS_REGION", AmazonS3ConfigKey::Region),
];

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub backend: Backend,
    pub max_upload: u64,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let bind = platform::config::bind_or_seed_port(source, &BIND)?;
        let account = source.parse(&ACCOUNT, |v| Ok(v.trim().to_string()))?;
        let access_key = source.parse(&ACCESS_KEY, |v| Ok(v.trim().to_string()))?;
        let endpoint = source.parse(&STORE_ENDPOINT, |v| {
            let v = v.trim().trim_end_matches('/');
            if v.starts_with("http://") || v.starts_with("https://") {
                Ok(v.to_string())
            } else {
                Err("an http:// or https:// URL".to_string())
            }
        })?;
        let store = source.parse(&STORE, |v| Ok(v.trim().to_string()))?;
        let backend = match (store, &account) {
            (None, None) => Backend::Local(PathBuf::from("./data/videos")),
            (None, Some(_)) => azure("videos", account.clone(), access_key, endpoint)
                .map_err(|e| invalid(&STORE, "", e))?,
            (Some(text), _) => {
                if let Some(container) = text
                    .strip_prefix("az://")
                    .or_else(|| text.strip_prefix("azure://"))
                {
                    azure(container, account.clone(), access_key, endpoint)
                        .map_err(|e| invalid(&STORE, &text, e))?
                } else if let Some(bucket) = text.strip_prefix("s3://") {
                    let bucket = bucket.trim_end_matches('/');
                    if bucket.is_empty() || bucket.contains('/') {
                        return Err(invalid(&STORE, &text, "s3://BUCKET, a bucket name only"));
                    }
                    let mut options = Vec::new();
                    for (name, key) in AWS_VARIABLES {
                        if let Some(value) = source.var(name) {
                            options.push((*key, value.to_string()));
                        }
                    }
                    Backend::S3 {
                        bucket: bucket.to_string(),
                        options,
                        endpoint,
                    }
                } else if text.is_empty() || (text.contains("://") && !text.starts_with("file://"))
                {
                    return Err(invalid(
                        &STORE,
                        &text,
                        "a directory, az://CONTAINER or s3://BUCKET",
                    ));
                } else {
                    Backend::Local(PathBuf::from(text.strip_prefix("file://").unwrap_or(&text)))
                }
            }
        };
        // The cloud clients speak plain HTTP only (no TLS in this build): an emulator or a
        // store on the local network, named by an http:// endpoint.
        let cloud = matches!(backend, Backend::Azure { .. } | Backend::S3 { .. });
        let plain_endpoint = match &backend {
            Backend::Azure { endpoint, .. } | Backend::S3 { endpoint, .. } => endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")),
            Backend::Local(_) => true,
        };
        if cloud && !plain_endpoint {
            return Err(ConfigError::Other(format!(
                "{}: Azure and S3 need an http:// endpoint for now (Azurite, MinIO); HTTPS to \
                 the cloud is not built in yet (docs/video.md)",
                STORE_ENDPOINT.env
            )));
        }
        Ok(Config {
            bind,
            backend,
            max_upload: source.parse_or_default(&MAX_UPLOAD, platform::config::parse_size)?,
            common: CommonConfig::from_source(source)?,
        })
    }
}

fn invalid(setting: &Setting, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        origin: setting.env.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

fn azure(
    container: &str,
    account: Option<String>,
    access_key: Option<String>,
    endpoint: Option<String>,
) -> Result<Backend, &'static str> {
    let container = container.trim_end_matches('/');
    if container.is_empty() || container.contains('/') {
        return Err("az://CONTAINER, a container name only");
    }
    let account = account.ok_or("an Azure store needs STORAGE_ACCOUNT_NAME")?;
    Ok(Backend::Azure {
        container: container.to_string(),
        account,
        access_key,
        endpoint,
    })
}

/// The storage routes, wrapped in the service contract.
pub fn app(store: Store, max_upload: u64, readiness: &Readiness) -> platform::Contracted {
    let routes = routes::routes(routes::AppState { store, max_upload });
    platform::contract_router(routes, readiness, ErrorStyle::Json)
}

/// Serves until `shutdown` resolves, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let store = Store::open(&config.backend)?;
    tracing::info!(store = ?config.backend, "video storage");
    let readiness = Readiness::new();
    let router = app(store, config.max_upload, &readiness);
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

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Open(#[from] store::OpenError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
