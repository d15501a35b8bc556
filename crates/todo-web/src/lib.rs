//! `flotilla todo-web`: the TODO board, rendered on the server from the TODO API.
//!
//! Three columns (TODO, PROGRESS, DONE) filled by three concurrent API calls; forms to create,
//! edit, move and delete items that work without JavaScript, and a small vendored script that
//! makes them update the board in place. The board never touches the database. Every API call goes
//! through the platform's protected client: with the API down the page still answers at once,
//! from its last good copy of each column, with a notice saying how old it is.
//!
//! Layout:
//! - `api`: the API client (protected calls, last good copies, request id passed on).
//! - `pages`: the board and its form handlers; templates in `templates/`.
//! - [`assets`]: CSS, JS and icon under content-hashed names; `--export-assets`.

pub mod assets;

mod api;
mod pages;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::{get, post};
use platform::config::{parse_bind, parse_duration};
use platform::{CommonConfig, ConfigError, ErrorStyle, Readiness, Setting, Source};
use tokio::net::TcpListener;

pub const BIND: Setting = Setting::bind("TODO_WEB_BIND", "0.0.0.0:3000");
pub const API_URL: Setting =
    Setting::new("TODO_API_URL", "api-url", "URL", "base URL of the TODO API")
        .default("http://localhost:8000");
pub const API_TIMEOUT: Setting = Setting::new(
    "TODO_API_TIMEOUT",
    "api-timeout",
    "DURATION",
    "how long one API call may take, retries included (FLOTILLA_CALL_TODO_API_TIMEOUT wins)",
)
.default("2s");
pub const EXPORT_ASSETS: Setting = Setting::new(
    "TODO_WEB_EXPORT_ASSETS",
    "export-assets",
    "DIR",
    "write the CSS/JS/icon files into DIR (for the gateway to serve) and exit",
);

pub const SETTINGS: &[Setting] = &[BIND, API_URL, API_TIMEOUT, EXPORT_ASSETS];

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub api_url: String,
    /// How calls to the API are protected: timeout, retries, breaker, bulkhead.
    pub api_calls: platform::CallPolicy,
    pub export_assets: Option<String>,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_source(source)?;
        Ok(Config {
            bind: source.parse_or_default(&BIND, parse_bind)?,
            api_url: source.parse_or_default(&API_URL, |v| {
                let url: reqwest::Url = v.parse().map_err(|_| "an http:// URL".to_string())?;
                if url.scheme() == "http" || url.scheme() == "https" {
                    Ok(v.to_string())
                } else {
                    Err("an http:// URL".to_string())
                }
            })?,
            api_calls: common.calls.policy(
                "todo-api",
                platform::CallPolicy {
                    timeout: source.parse_or_default(&API_TIMEOUT, parse_duration)?,
                    ..platform::CallPolicy::default()
                },
            )?,
            export_assets: source.parse(&EXPORT_ASSETS, |v| Ok(v.to_string()))?,
            common,
        })
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    api: api::Api,
}

/// The board's routes, wrapped in the service contract.
pub fn app(config: &Config, readiness: &Readiness) -> platform::Contracted {
    let api = api::Api::new(&config.api_url, config.api_calls.clone());
    let probe = api.clone();
    readiness.add_check("todo-api", true, move || {
        let probe = probe.clone();
        async move {
            probe.probe().await.map_err(|e| e.to_string())?;
            Ok(serde_json::json!({ "circuit": probe.target().state().as_str() }))
        }
    });
    let routes = Router::new()
        .route("/", get(pages::board))
        .route("/todo", post(pages::create))
        .route("/todo/{id}", post(pages::edit))
        .route("/todo/{id}/status", post(pages::move_to))
        .route("/todo/{id}/delete", post(pages::delete))
        .route("/assets/{name}", get(assets::serve))
        .with_state(AppState { api });
    // Its calls to the API are children of the page request's span.
    platform::contract_router(routes, readiness, ErrorStyle::Plain).forwarding_trace_context()
}

/// Serves until `shutdown` resolves, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let readiness = Readiness::new();
    let router = app(&config, &readiness);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn defaults_are_the_originals_and_bad_urls_are_named() {
        let config = Config::from_source(&Source::default()).unwrap();
        assert_eq!(config.bind, "0.0.0.0:3000".parse().unwrap());
        assert_eq!(config.api_url, "http://localhost:8000");
        assert_eq!(config.api_calls.timeout, Duration::from_secs(2));
        let error = Config::from_source(&Source::from_pairs([(
            "FLOTILLA_CALL_TODO_API_FAILURE_RATE",
            "101",
        )]))
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("FLOTILLA_CALL_TODO_API_FAILURE_RATE"),
            "{error}"
        );
        let error =
            Config::from_source(&Source::from_pairs([("TODO_API_URL", "ftp://x")])).unwrap_err();
        assert!(error.to_string().contains("TODO_API_URL"), "{error}");
    }
}
