//! The registry's page at `/`: every app and instance with its status, address, last heartbeat
//! and lease expiry, and the peers. Server-rendered, so it reads without JavaScript; a small
//! script asks for the page again with `?version=N&wait=5`, which answers as soon as the registry
//! changes (or after 5 s), and swaps it in.

use std::time::Duration;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::registry::now_ms;
use crate::render::status_order;
use crate::routes::Shared;

/// Longest the page waits for a change.
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Page {
    version: u64,
    instance_count: usize,
    apps: Vec<AppView>,
    peers: Vec<String>,
}

struct AppView {
    name: String,
    summary: String,
    rows: Vec<Row>,
}

struct Row {
    id: String,
    status: &'static str,
    address: String,
    heartbeat: String,
    expires: String,
    late: bool,
}

#[derive(Deserialize)]
pub struct Watch {
    version: Option<u64>,
    wait: Option<u64>,
}

fn ago(ms: u64) -> String {
    let seconds = ms / 1000;
    if seconds < 120 {
        format!("{seconds} s ago")
    } else {
        format!("{} min ago", seconds / 60)
    }
}

pub async fn page(State(shared): State<Shared>, Query(watch): Query<Watch>) -> Response {
    if let Some(version) = watch.version {
        let wait = Duration::from_secs(watch.wait.unwrap_or(5)).min(MAX_WAIT);
        let mut changes = shared.registry.watch();
        let _ = tokio::time::timeout(wait, changes.wait_for(|v| *v != version)).await;
    }
    let now = now_ms();
    let (version, apps) = shared.registry.snapshot();
    let instance_count = apps.values().map(Vec::len).sum();
    let apps = apps
        .into_iter()
        .map(|(name, mut instances)| {
            instances.sort_by(|a, b| {
                (status_order(a.status()), &a.id).cmp(&(status_order(b.status()), &b.id))
            });
            let up = instances
                .iter()
                .filter(|i| i.status() == crate::instance::Status::Up)
                .count();
            let rows = instances
                .into_iter()
                .map(|i| {
                    let expiry = i.last_renewal_timestamp + u64::from(i.duration_secs) * 1000;
                    Row {
                        status: i.status().as_str(),
                        address: format!("{}:{}", i.ip_addr, i.port.number),
                        heartbeat: ago(now.saturating_sub(i.last_renewal_timestamp)),
                        expires: if expiry > now {
                            format!("in {} s", (expiry - now).div_ceil(1000))
                        } else {
                            "expired".to_string()
                        },
                        late: now
                            > i.last_renewal_timestamp + u64::from(i.renewal_interval_secs) * 2000,
                        id: i.id,
                    }
                })
                .collect::<Vec<_>>();
            AppView {
                summary: format!("{up} of {} up", rows.len()),
                name,
                rows,
            }
        })
        .collect();
    let page = Page {
        version,
        instance_count,
        apps,
        peers: shared.peers.urls().map(str::to_string).collect(),
    };
    match page.render() {
        Ok(html) => ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render the dashboard");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../templates/dashboard.js"),
    )
        .into_response()
}
