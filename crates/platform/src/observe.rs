//! One log line and one set of metrics per request.
//!
//! Metrics are labelled by the matched route template (`/todo/{id}`), never the raw path, so a
//! scan of random URLs cannot blow up the number of series. A handler that routes by itself (the
//! gateway) names the route by putting a [`RouteLabel`] in the response's extensions. Probes (`/hc`, `/ready`, `/metrics`)
//! are counted but logged only at debug level: a gateway checks them every second.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Header carrying the request id, passed through or generated.
pub const REQUEST_ID: &str = "x-request-id";

/// The route a response belongs to, for handlers that route by themselves. Takes precedence over
/// axum's matched path.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub std::sync::Arc<str>);

/// Put in a response's extensions by a handler that writes its own access log line (the
/// gateway): the request is still counted in the metrics, but not logged a second time.
#[derive(Debug, Clone, Copy)]
pub struct AccessLogged;

const PROBES: &[&str] = &["/hc", "/ready", "/metrics", "/healthcheck"];

pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let request_id = request.headers().get(REQUEST_ID).cloned();

    let in_flight = metrics::gauge!("http_requests_in_flight");
    in_flight.increment(1.0);
    let response = next.run(request).await;
    in_flight.decrement(1.0);

    let elapsed = start.elapsed();
    let route = match (response.extensions().get::<RouteLabel>(), matched) {
        (Some(label), _) => label.0.to_string(),
        (None, Some(matched)) => matched,
        (None, None) => "unmatched".to_owned(),
    };
    let status = response.status().as_u16();
    let method_label = method.as_str().to_owned();
    metrics::counter!(
        "http_requests_total",
        "method" => method_label.clone(),
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "http_request_duration_seconds",
        "method" => method_label,
        "route" => route
    )
    .record(elapsed.as_secs_f64());

    let request_id = request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    if response.extensions().get::<AccessLogged>().is_some() {
        return response;
    }
    if PROBES.contains(&path.as_str()) {
        tracing::debug!(target: "access", %method, %path, status, latency_ms, request_id, "request");
    } else {
        tracing::info!(target: "access", %method, %path, status, latency_ms, request_id, "request");
    }
    response
}
