//! The collector's pages, rendered on the server so they work without JavaScript: `/` searches
//! traces (service, span name, minimum duration, time range) and lists them; `/traces/{id}` shows
//! one trace as a waterfall (nested spans on a time line, tags and annotations, errors in red);
//! `/dependencies` shows which service calls which, as a table and a drawn graph.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::routes::{Shared, now_micros, trace_query};
use crate::span::{self, Span};

/// The time ranges the search offers, as (label, milliseconds).
const LOOKBACKS: [(&str, u64); 6] = [
    ("15 minutes", 900_000),
    ("1 hour", 3_600_000),
    ("6 hours", 21_600_000),
    ("1 day", 86_400_000),
    ("7 days", 604_800_000),
    ("30 days", 2_592_000_000),
];

pub fn pages(shared: Shared) -> Router {
    Router::new()
        .route("/", get(search))
        .route("/traces/{id}", get(trace))
        .route("/dependencies", get(dependencies))
        .with_state(shared)
}

fn render(status: StatusCode, page: impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the page").into_response()
        }
    }
}

/// A duration in microseconds, as people read it.
fn duration(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.3} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.3} s", us as f64 / 1_000_000.0)
    }
}

/// A timestamp in microseconds, in UTC.
fn time(us: u64) -> String {
    let seconds = (us / 1_000_000) as i64;
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// `100ms`, `2s`, `1m`, or a bare number of milliseconds, in microseconds.
fn min_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len()),
    );
    let value: f64 = number.parse().map_err(|_| {
        format!("minimum duration {text:?}: a number with ms, s or m, such as 100ms")
    })?;
    let factor = match unit.trim() {
        "" | "ms" => 1_000.0,
        "us" | "µs" => 1.0,
        "s" => 1_000_000.0,
        "m" => 60_000_000.0,
        _ => {
            return Err(format!(
                "minimum duration {text:?}: a number with ms, s or m, such as 100ms"
            ));
        }
    };
    if !(value.is_finite() && value >= 0.0 && value * factor < 1e15) {
        return Err(format!("minimum duration {text:?} is out of range"));
    }
    Ok((value * factor) as u64)
}

fn spans_of(trace: Vec<serde_json::Value>) -> Vec<Span> {
    trace
        .into_iter()
        .filter_map(|value| serde_json::from_value(value).ok())
        .collect()
}

/// Start and end of a trace, in microseconds.
fn extent(spans: &[Span]) -> (u64, u64) {
    let start = spans.iter().filter_map(|s| s.timestamp).min().unwrap_or(0);
    let end = spans
        .iter()
        .filter_map(|s| Some(s.timestamp? + s.duration.unwrap_or(0)))
        .max()
        .unwrap_or(start);
    (start, end.max(start))
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    services: Vec<String>,
    service: String,
    span_name: String,
    min_duration: String,
    lookback: u64,
    lookbacks: Vec<(&'static str, u64)>,
    limit: u64,
    error: Option<String>,
    searched: bool,
    results: Vec<TraceRow>,
}

struct TraceRow {
    id: String,
    root: String,
    started: String,
    duration: String,
    spans: usize,
    services: String,
    error: bool,
}

async fn search(
    State(shared): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| {
        params
            .get(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let lookback = params
        .get("lookback")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_600_000);
    let limit = params
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut page = SearchPage {
        services: Vec::new(),
        service: field("serviceName").to_lowercase(),
        span_name: field("spanName").to_lowercase(),
        min_duration: field("minDuration"),
        lookback,
        lookbacks: LOOKBACKS.to_vec(),
        limit,
        error: None,
        searched: !params.is_empty(),
        results: Vec::new(),
    };
    let store = std::sync::Arc::clone(&shared.store);
    page.services = tokio::task::spawn_blocking(move || store.services())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let mut query = HashMap::new();
    query.insert("serviceName".to_string(), page.service.clone());
    query.insert("spanName".to_string(), page.span_name.clone());
    query.insert("lookback".to_string(), lookback.to_string());
    query.insert("limit".to_string(), limit.to_string());
    if !page.min_duration.is_empty() {
        match min_duration(&page.min_duration) {
            Ok(us) => {
                query.insert("minDuration".to_string(), us.to_string());
            }
            Err(message) => {
                page.error = Some(message);
                return render(StatusCode::BAD_REQUEST, page);
            }
        }
    }
    let query = match trace_query(&query) {
        Ok(query) => query,
        Err(refused) => {
            page.error = Some(refused.message());
            return render(StatusCode::BAD_REQUEST, page);
        }
    };
    let store = std::sync::Arc::clone(&shared.store);
    let found = match tokio::task::spawn_blocking(move || store.traces(&query)).await {
        Ok(Ok(found)) => found,
        _ => {
            page.error = Some("the trace store is unavailable".to_string());
            return render(StatusCode::SERVICE_UNAVAILABLE, page);
        }
    };
    page.results = found.into_iter().map(|t| trace_row(spans_of(t))).collect();
    render(StatusCode::OK, page)
}

fn trace_row(spans: Vec<Span>) -> TraceRow {
    let (start, end) = extent(&spans);
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    let root = spans
        .iter()
        .filter(|s| s.parent_id.as_deref().is_none_or(|p| !ids.contains(p)))
        .min_by_key(|s| s.timestamp.unwrap_or(u64::MAX))
        .or(spans.first());
    let mut services: BTreeMap<&str, usize> = BTreeMap::new();
    for span in &spans {
        *services
            .entry(span.service().unwrap_or("unknown"))
            .or_default() += 1;
    }
    TraceRow {
        id: spans
            .first()
            .map(|s| s.trace_id.clone())
            .unwrap_or_default(),
        root: root.map_or(String::new(), |r| {
            format!(
                "{}: {}",
                r.service().unwrap_or("unknown"),
                r.name.as_deref().unwrap_or("(unnamed)")
            )
        }),
        started: time(start),
        duration: duration(end - start),
        spans: spans.len(),
        services: services
            .iter()
            .map(|(name, n)| format!("{name} ×{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        error: spans.iter().any(Span::is_error),
    }
}

#[derive(Template)]
#[template(path = "trace.html")]
struct TracePage {
    id: String,
    summary: TraceRow,
    rows: Vec<SpanRow>,
    ticks: Vec<String>,
}

struct SpanRow {
    indent: usize,
    service: String,
    name: String,
    kind: String,
    remote: String,
    duration: String,
    left: String,
    width: String,
    error: bool,
    id: String,
    details: Vec<(String, String)>,
}

async fn trace(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let not_found = |message: String| {
        (
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html><title>Trace not found</title><p>{}</p><p><a href=\"/\">Search</a></p>",
                askama::filters::escape(&message, askama::filters::Html)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )),
        )
            .into_response()
    };
    let Ok(normalised) = span::trace_id(&id) else {
        return not_found(format!("{id:?} is not a trace id."));
    };
    let store = std::sync::Arc::clone(&shared.store);
    let wanted = normalised.clone();
    let found = tokio::task::spawn_blocking(move || store.traces_by_id(&[wanted])).await;
    let Some(trace) = found.ok().and_then(Result::ok).and_then(|mut t| t.pop()) else {
        return not_found(format!("No trace {normalised} is stored."));
    };
    let spans = spans_of(trace);
    let (start, end) = extent(&spans);
    let total = (end - start).max(1);
    let rows = waterfall(&spans)
        .into_iter()
        .map(|(depth, span)| span_row(depth, span, start, total))
        .collect();
    let ticks = (0..=4).map(|i| duration(total * i / 4)).collect();
    render(
        StatusCode::OK,
        TracePage {
            id: normalised,
            summary: trace_row(spans.clone()),
            rows,
            ticks,
        },
    )
}

/// The spans in tree order (each after its parent, siblings by start), with their depth. Spans
/// whose parent is not in the trace are roots.
fn waterfall(spans: &[Span]) -> Vec<(usize, &Span)> {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&Span>> = HashMap::new();
    let mut roots = Vec::new();
    for span in spans {
        match span.parent_id.as_deref() {
            Some(parent) if ids.contains(parent) && parent != span.id => {
                children.entry(parent).or_default().push(span)
            }
            _ => roots.push(span),
        }
    }
    let by_start = |list: &mut Vec<&Span>| list.sort_by_key(|s| s.timestamp.unwrap_or(u64::MAX));
    by_start(&mut roots);
    for list in children.values_mut() {
        by_start(list);
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut stack: Vec<(usize, &Span)> = roots.into_iter().rev().map(|s| (0, s)).collect();
    let mut seen = BTreeSet::new();
    while let Some((depth, span)) = stack.pop() {
        // A span id reported twice (a client and a server sharing it) is expanded once.
        let first = seen.insert(span.id.as_str());
        out.push((depth, span));
        if first && let Some(list) = children.get(span.id.as_str()) {
            stack.extend(list.iter().rev().map(|s| (depth + 1, *s)));
        }
    }
    out
}

fn span_row(depth: usize, span: &Span, start: u64, total: u64) -> SpanRow {
    let offset = span.timestamp.map_or(0, |t| t.saturating_sub(start));
    let length = span.duration.unwrap_or(0);
    let mut details: Vec<(String, String)> = span
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for annotation in &span.annotations {
        details.push((
            format!(
                "at +{}",
                duration(annotation.timestamp.saturating_sub(start))
            ),
            annotation.value.clone(),
        ));
    }
    if let Some(endpoint) = &span.local_endpoint {
        let address = [endpoint.ipv4.as_deref(), endpoint.ipv6.as_deref()]
            .into_iter()
            .flatten()
            .next();
        if let Some(address) = address {
            let port = endpoint.port.map(|p| format!(":{p}")).unwrap_or_default();
            details.push(("local address".to_string(), format!("{address}{port}")));
        }
    }
    SpanRow {
        indent: depth.min(20) * 14,
        service: span.service().unwrap_or("unknown").to_string(),
        name: span.name.clone().unwrap_or_else(|| "(unnamed)".to_string()),
        kind: span
            .kind
            .as_ref()
            .map(|k| format!("{k:?}").to_uppercase())
            .unwrap_or_default(),
        remote: span.remote_service().unwrap_or_default().to_string(),
        duration: span.duration.map(duration).unwrap_or_default(),
        left: format!("{:.3}", offset as f64 * 100.0 / total as f64),
        width: format!("{:.3}", (length as f64 * 100.0 / total as f64).max(0.3)),
        error: span.is_error(),
        id: span.id.clone(),
        details,
    }
}

#[derive(Template)]
#[template(path = "dependencies.html")]
struct DependenciesPage {
    lookback: u64,
    lookbacks: Vec<(&'static str, u64)>,
    links: Vec<crate::store::Link>,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

struct Node {
    name: String,
    x: i64,
    y: i64,
}

struct Edge {
    x1: i64,
    y1: i64,
    x2: i64,
    y2: i64,
    label_x: i64,
    label_y: i64,
    label: String,
    error: bool,
}

async fn dependencies(
    State(shared): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let lookback: u64 = params
        .get("lookback")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0 && *v <= 2_592_000_000)
        .unwrap_or(86_400_000);
    let store = std::sync::Arc::clone(&shared.store);
    let end = now_micros();
    let links = tokio::task::spawn_blocking(move || store.dependencies(end, lookback * 1000))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    // Services on a circle, each link a line between them.
    let names: BTreeSet<&str> = links
        .iter()
        .flat_map(|l| [l.parent.as_str(), l.child.as_str()])
        .collect();
    let count = names.len().max(1) as f64;
    let nodes: Vec<Node> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let angle = std::f64::consts::TAU * i as f64 / count - std::f64::consts::FRAC_PI_2;
            Node {
                name: name.to_string(),
                x: 300 + (200.0 * angle.cos()) as i64,
                y: 240 + (170.0 * angle.sin()) as i64,
            }
        })
        .collect();
    let at = |name: &str| {
        nodes
            .iter()
            .find(|n| n.name == name)
            .map_or((0, 0), |n| (n.x, n.y))
    };
    let edges = links
        .iter()
        .map(|link| {
            let (x1, y1) = at(&link.parent);
            let (x2, y2) = at(&link.child);
            // Stop short of the child's circle, so the arrow head shows.
            let (dx, dy) = ((x2 - x1) as f64, (y2 - y1) as f64);
            let length = (dx * dx + dy * dy).sqrt().max(1.0);
            let shorten = (34.0 / length).min(0.5);
            Edge {
                label_x: (x1 + x2) / 2,
                label_y: (y1 + y2) / 2 - 6,
                x1,
                y1,
                x2: x2 - (dx * shorten) as i64,
                y2: y2 - (dy * shorten) as i64,
                label: format!("{} calls", link.call_count),
                error: link.error_count > 0,
            }
        })
        .collect();
    render(
        StatusCode::OK,
        DependenciesPage {
            lookback,
            lookbacks: LOOKBACKS.to_vec(),
            links,
            nodes,
            edges,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_durations_read_as_people_write_them() {
        assert_eq!(min_duration("100ms").unwrap(), 100_000);
        assert_eq!(min_duration("1.5s").unwrap(), 1_500_000);
        assert_eq!(min_duration("250").unwrap(), 250_000);
        assert!(min_duration("fast").is_err());
        assert!(min_duration("1e99s").is_err());
    }
}
