//! The admin listener's view of the gateway: `GET /status` (JSON: every route, every upstream
//! server with its state, requests in flight, failures and latency average) and the same as a
//! small HTML page at `GET /` (`/status.html`), refreshed every 2 seconds; `POST /reload`. Also
//! keeps the `gateway_upstream_servers{upstream,state}` gauges current.
//!
//! A web page the admin's browser shows must not be able to use these routes: their `Host` must
//! be an IP address or `localhost` (a DNS rebinding page comes with its own name), and
//! `POST /reload` needs the [`ADMIN_HEADER`] header (which a page cannot send to another origin
//! without a preflight this listener never allows) and no `Origin` but the listener's own.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::{Value, json};

use crate::routing::LiveRoutes;

/// How a `POST /reload` learns what came of it: a summary, or the error that kept the running
/// config.
pub(crate) type ReloadReply = tokio::sync::oneshot::Sender<Result<String, String>>;

#[derive(Clone)]
struct Admin {
    live: Arc<LiveRoutes>,
    reloads: tokio::sync::mpsc::Sender<ReloadReply>,
}

/// The header `POST /reload` must carry (`flotilla gateway --reload` sends it).
pub(crate) const ADMIN_HEADER: &str = "x-flotilla-admin";

/// The admin routes beyond the service contract.
pub(crate) fn router(
    live: Arc<LiveRoutes>,
    reloads: tokio::sync::mpsc::Sender<ReloadReply>,
) -> Router {
    Router::new()
        .route("/status", get(status_json))
        .route("/", get(status_html))
        .route("/status.html", get(status_html))
        .route("/reload", post(reload))
        .layer(axum::middleware::from_fn(local_only))
        .with_state(Admin { live, reloads })
}

/// Refuses (403) a request whose `Host` is a name other than `localhost`.
async fn local_only(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = request
        .headers()
        .get(http::header::HOST)
        .map(|h| h.to_str().unwrap_or("?"));
    if host.is_some_and(|host| !is_local_name(host)) {
        return platform::error_response(
            StatusCode::FORBIDDEN,
            "the admin listener answers only requests for an IP address or localhost",
        );
    }
    next.run(request).await
}

/// Whether `host` (`name[:port]`) is an IP address or `localhost`.
fn is_local_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split_once(']')
                .is_some_and(|(a, _)| a.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// `POST /reload`: reads the config again, as SIGHUP does; 200 with a summary, or 422 with the
/// error (the running config stays). Refused (403) without [`ADMIN_HEADER`], or from a page of
/// another origin.
async fn reload(State(admin): State<Admin>, headers: http::HeaderMap) -> Response {
    if !headers.contains_key(ADMIN_HEADER) {
        return platform::error_response(
            StatusCode::FORBIDDEN,
            format!("POST /reload needs the header {ADMIN_HEADER}: 1"),
        );
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let own = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|host| format!("http://{host}"));
        if own.as_deref() != origin.to_str().ok() {
            return platform::error_response(
                StatusCode::FORBIDDEN,
                "POST /reload is refused from another origin",
            );
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if admin.reloads.send(tx).await.is_err() {
        return platform::error_response(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match rx.await {
        Ok(Ok(summary)) => {
            Json(json!({ "status": "reloaded", "message": summary })).into_response()
        }
        Ok(Err(error)) => platform::error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("config not reloaded, the running one is kept: {error}"),
        ),
        Err(_) => platform::error_response(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

fn snapshot(live: &LiveRoutes) -> Value {
    let table = live.current();
    let upstreams: serde_json::Map<String, Value> = table
        .upstreams()
        .map(|u| (u.name.to_string(), u.status()))
        .collect();
    json!({ "routes": table.status(), "upstreams": upstreams })
}

async fn status_json(State(admin): State<Admin>) -> Json<Value> {
    Json(snapshot(&admin.live))
}

async fn status_html(State(admin): State<Admin>) -> Html<String> {
    let status = snapshot(&admin.live);
    let mut page = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"2\"><title>Flotilla gateway</title><style>\
         body{font:14px system-ui,sans-serif;margin:1.5rem;color:#222}\
         table{border-collapse:collapse;margin-bottom:1.5rem}td,th{padding:.3rem .7rem;\
         border-bottom:1px solid #ddd;text-align:left}th{background:#f4f4f4}\
         .up{color:#116611;font-weight:600}.down{color:#b00020;font-weight:600}\
         .backup{color:#8a6d00;font-weight:600}h2 small{font-weight:400;color:#666}\
         </style></head><body><h1>Flotilla gateway</h1>",
    );
    page.push_str("<h2>Routes</h2><table><tr><th>route</th><th>host</th><th>path</th><th>upstream</th><th>options</th></tr>");
    for route in status["routes"].as_array().into_iter().flatten() {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&route["name"]),
            text(&route["host"]),
            text(&route["path"]),
            text(&route["upstream"]),
            escape(&route["options"].as_array().map_or_else(String::new, |o| {
                o.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })),
        );
    }
    page.push_str("</table>");
    for (name, upstream) in status["upstreams"].as_object().into_iter().flatten() {
        let _ = write!(
            page,
            "<h2>{} <small>{}, {} of {} up</small></h2><table><tr><th>server</th><th>state</th>\
             <th>health check</th><th>in flight</th><th>requests</th><th>failures</th>\
             <th>latency</th></tr>",
            escape(name),
            text(&upstream["policy"]),
            upstream["available"],
            upstream["servers"].as_array().map_or(0, Vec::len),
        );
        for server in upstream["servers"].as_array().into_iter().flatten() {
            let state = server["state"].as_str().unwrap_or("down");
            let _ = write!(
                page,
                "<tr><td>{}</td><td class=\"{state}\">{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&server["address"]),
                text(&server["health_check"]),
                server["active"],
                server["requests"],
                server["failures"],
                server["latency_ms"]
                    .as_f64()
                    .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms")),
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</body></html>");
    Html(page)
}

fn text(value: &Value) -> String {
    escape(value.as_str().unwrap_or("-"))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Sets `gateway_upstream_servers{upstream,state}` from the pools in force.
pub(crate) fn update_gauges(live: &LiveRoutes) {
    let table = live.current();
    for upstream in table.upstreams() {
        let (up, backups) = upstream.available_count();
        let down = upstream.servers.len() - up - backups;
        for (state, count) in [("up", up), ("backup", backups), ("down", down)] {
            metrics::gauge!("gateway_upstream_servers", "upstream" => upstream.name.to_string(), "state" => state)
                .set(count as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_addresses_and_localhost_are_local_names() {
        for local in [
            "127.0.0.1:9901",
            "10.0.0.7",
            "[::1]:9901",
            "[fe80::1]",
            "localhost:9901",
            "LOCALHOST",
        ] {
            assert!(is_local_name(local), "{local}");
        }
        for foreign in [
            "evil.example:9901",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[::1",
            "[zz]:1",
        ] {
            assert!(!is_local_name(foreign), "{foreign}");
        }
    }
}
