//! `flotilla echo`: the seeds' test-web backend, used behind the gateway in tests and benchmarks.
//!
//! `GET /` answers `<hostname>, current time : <epoch millis>`, which shows which replica served
//! a request; `GET /{ms}` answers the same after sleeping `ms` milliseconds (a slow request for
//! drain and timeout tests); `GET /healthcheck` answers `ok`, optionally after a delay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use platform::{CommonConfig, ConfigError, ErrorStyle, Readiness, Setting, Source};
use tokio::net::TcpListener;

/// Longest delay a request may ask for, so a typo cannot hold a connection for days.
pub const MAX_DELAY_MS: u64 = 600_000;

pub const BIND: Setting = Setting::bind("ECHO_BIND", "0.0.0.0:8080");
pub const HOSTNAME: Setting = Setting::new(
    "HOSTNAME",
    "hostname",
    "NAME",
    "name to answer with (default: the machine's hostname)",
);

pub const SETTINGS: &[Setting] = &[BIND, HOSTNAME];

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub hostname: String,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        Ok(Config {
            bind: source.parse_or_default(&BIND, platform::config::parse_bind)?,
            hostname: source
                .parse(&HOSTNAME, |v| Ok(v.to_string()))?
                .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
            common: CommonConfig::from_source(source)?,
        })
    }
}

/// The echo routes, wrapped in the service contract.
pub fn app(hostname: &str, readiness: &Readiness) -> platform::Contracted {
    let routes = Router::new()
        .route("/", get(now))
        .route("/{ms}", get(delayed_now))
        .route("/healthcheck", get(healthy))
        .route("/healthcheck/{ms}", get(delayed_healthy))
        .with_state(Arc::<str>::from(hostname));
    platform::contract_router(routes, readiness, ErrorStyle::Plain)
}

/// Serves until `shutdown` resolves, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let readiness = Readiness::new();
    let router = app(&config.hostname, &readiness);
    // Nothing to prepare: ready as soon as it listens.
    readiness.started();
    platform::serve(
        listener,
        router,
        config.common.serve_options(),
        readiness,
        shutdown,
    )
    .await
}

async fn now(State(hostname): State<Arc<str>>) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("{hostname}, current time : {millis}")
}

async fn delayed_now(state: State<Arc<str>>, Path(ms): Path<String>) -> Response {
    match sleep_for(&ms).await {
        Ok(()) => now(state).await.into_response(),
        Err(rejection) => rejection,
    }
}

async fn healthy() -> &'static str {
    "ok"
}

async fn delayed_healthy(Path(ms): Path<String>) -> Response {
    match sleep_for(&ms).await {
        Ok(()) => "ok".into_response(),
        Err(rejection) => rejection,
    }
}

async fn sleep_for(ms: &str) -> Result<(), Response> {
    let ms: u64 = ms.parse().map_err(|_| {
        let message = format!("delay must be a whole number of milliseconds, got {ms:?}\n");
        (StatusCode::BAD_REQUEST, message).into_response()
    })?;
    if ms > MAX_DELAY_MS {
        let message = format!("delay must be at most {MAX_DELAY_MS} ms, got {ms}\n");
        return Err((StatusCode::BAD_REQUEST, message).into_response());
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}
