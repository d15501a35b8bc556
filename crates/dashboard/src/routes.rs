//! `GET /` (the page), `GET /stream` (the tiles as HTML, as server-sent events, each interval)
//! and `GET /api/tiles` (the same data as JSON).

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::watch;

use crate::Latest;
use crate::aggregate::View;
use crate::scrape::Kind;

#[derive(Clone)]
struct Shared {
    latest: watch::Receiver<Latest>,
    refresh_seconds: u64,
}

pub(crate) fn router(latest: watch::Receiver<Latest>, interval: Duration) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/stream", get(stream))
        .route("/api/tiles", get(tiles))
        .with_state(Shared {
            latest,
            refresh_seconds: interval.as_secs().clamp(2, 60),
        })
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Page<'a> {
    tiles: &'a str,
    refresh_seconds: u64,
}

#[derive(Template)]
#[template(path = "tiles.html")]
struct Tiles {
    services: Vec<ServiceView>,
}

struct ServiceView {
    name: String,
    hosts: usize,
    unreadable: Vec<(String, String)>,
    tiles: Vec<TileView>,
}

struct TileView {
    kind: &'static str,
    name: String,
    state: String,
    rate: String,
    error_percent: String,
    p50: String,
    p99: String,
    hosts: usize,
    detail: String,
}

fn number(value: Option<f64>, unit: &str) -> String {
    match value {
        Some(v) if v >= 100.0 => format!("{v:.0}{unit}"),
        Some(v) => format!("{v:.1}{unit}"),
        None => "–".to_string(),
    }
}

/// The tiles of `view`, grouped by service, as HTML.
pub(crate) fn render_tiles(view: &View) -> String {
    let services = view
        .services
        .iter()
        .map(|service| ServiceView {
            name: service.name.clone(),
            hosts: service.hosts,
            unreadable: service
                .unreadable
                .iter()
                .map(|u| (u.instance.clone(), u.error.clone()))
                .collect(),
            tiles: view
                .tiles
                .iter()
                .filter(|t| t.service == service.name)
                .map(|t| TileView {
                    kind: match t.kind {
                        Kind::Circuit => "circuit",
                        Kind::Upstream => "upstream",
                    },
                    name: t.name.clone(),
                    state: t.state.clone(),
                    rate: number(Some(t.rate), "/s"),
                    error_percent: number(t.error_percent, " %"),
                    p50: number(t.p50_ms, " ms"),
                    p99: number(t.p99_ms, " ms"),
                    hosts: t.hosts,
                    detail: t
                        .states
                        .iter()
                        .filter(|(_, n)| **n > 0.0)
                        .map(|(state, n)| format!("{state} {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
                .collect(),
        })
        .collect();
    Tiles { services }
        .render()
        .unwrap_or_else(|_| "<p>cannot render the tiles</p>".to_string())
}

async fn page(State(shared): State<Shared>) -> Response {
    let html = shared.latest.borrow().html.clone();
    let page = Page {
        tiles: &html,
        refresh_seconds: shared.refresh_seconds,
    };
    match page.render() {
        Ok(page) => ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render the dashboard");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render the dashboard",
            )
                .into_response()
        }
    }
}

async fn tiles(State(shared): State<Shared>) -> Response {
    let view = shared.latest.borrow().view.clone();
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(view)).into_response()
}

/// The tiles now, then each time they change.
async fn stream(
    State(shared): State<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut latest = shared.latest;
    latest.mark_changed();
    let events = futures_util::stream::unfold(latest, |mut latest| async move {
        latest.changed().await.ok()?;
        let html = latest.borrow_and_update().html.clone();
        let event = Event::default().event("tiles").data(html.replace('\r', ""));
        Some((Ok(event), latest))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
