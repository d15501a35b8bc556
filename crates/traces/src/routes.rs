//! Zipkin's v2 HTTP API: `POST /api/v2/spans` (JSON, optionally gzip) and the query operations
//! the Zipkin UI and tools use, under `/api/v2/` and `/zipkin/api/v2/`. Answers and errors as
//! Zipkin gives them: `202` with no body for an accepted batch, `400` with a text message naming
//! the problem (the whole batch refused), JSON for queries.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use crate::span;
use crate::store::{Store, TraceQuery};

/// Largest request body, before and after gzip.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Zipkin's default look-back: a day, in milliseconds.
const DEFAULT_LOOKBACK_MS: u64 = 86_400_000;
/// Most traces one query answers.
const MAX_LIMIT: usize = 1000;

#[derive(Clone)]
pub struct Shared {
    pub store: Arc<Store>,
    /// Stores ingested batches (group commit).
    pub writer: crate::writer::Writer,
    /// The tag keys `autocompleteKeys` offers (`TRACES_AUTOCOMPLETE_KEYS`).
    pub autocomplete_keys: Arc<Vec<String>>,
}

/// A refusal or a failure, answered as Zipkin does: a status and a text message.
#[derive(Debug)]
pub enum Refused {
    BadRequest(String),
    NotFound(String),
    Unsupported(String),
    /// The collector cannot keep up: the client may retry later.
    Busy,
    /// The store failed: logged in full, answered without internals.
    Store(crate::store::StoreError),
    /// The store failed, already logged.
    Unavailable,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Refused::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Refused::NotFound(message) => (StatusCode::NOT_FOUND, message),
            Refused::Unsupported(message) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, message),
            Refused::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the collector is busy; send the spans again later".to_string(),
            ),
            Refused::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the trace store is unavailable".to_string(),
            ),
            Refused::Store(error) => {
                tracing::error!(error = %error, "trace store failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the trace store is unavailable".to_string(),
                )
            }
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message,
        )
            .into_response()
    }
}

impl Refused {
    /// What the client is told.
    pub fn message(&self) -> String {
        match self {
            Refused::BadRequest(m) | Refused::NotFound(m) | Refused::Unsupported(m) => m.clone(),
            Refused::Busy => "the collector is busy; send the spans again later".to_string(),
            Refused::Store(_) | Refused::Unavailable => {
                "the trace store is unavailable".to_string()
            }
        }
    }
}

impl From<crate::store::StoreError> for Refused {
    fn from(error: crate::store::StoreError) -> Self {
        Refused::Store(error)
    }
}

/// Now, in microseconds since the epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as u64
}

/// Zipkin's API, under both of its prefixes.
pub fn zipkin(shared: Shared) -> Router {
    let api = Router::new()
        .route("/spans", get(span_names).post(ingest))
        .route("/services", get(services))
        .route("/remoteServices", get(remote_services))
        .route("/traces", get(traces))
        .route("/trace/{id}", get(trace))
        .route("/traceMany", get(trace_many))
        .route("/dependencies", get(dependencies))
        .route("/autocompleteKeys", get(autocomplete_keys))
        .route("/autocompleteValues", get(autocomplete_values))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared);
    Router::new()
        .nest("/api/v2", api.clone())
        .nest("/zipkin/api/v2", api)
}

/// Runs a store call off the async threads.
async fn blocking<T: Send + 'static>(
    shared: &Shared,
    call: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Refused> {
    let store = Arc::clone(&shared.store);
    match tokio::task::spawn_blocking(move || call(&store)).await {
        Ok(result) => result.map_err(Refused::Store),
        Err(_) => Err(Refused::BadRequest("the request was cancelled".to_string())),
    }
}

async fn ingest(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refused> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    if !content_type.starts_with("application/json") && !content_type.starts_with("text/plain") {
        return Err(Refused::Unsupported(format!(
            "content type {content_type} is not supported: send Zipkin v2 JSON (application/json)"
        )));
    }
    let body = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        None | Some("identity") => body.to_vec(),
        Some(encoding) if encoding.eq_ignore_ascii_case("gzip") => gunzip(&body)?,
        Some(encoding) => {
            return Err(Refused::Unsupported(format!(
                "content encoding {encoding} is not supported: send gzip or none"
            )));
        }
    };
    let spans = span::parse_batch(&body).map_err(|message| {
        metrics::counter!("traces_spans_total", "outcome" => "rejected").increment(1);
        Refused::BadRequest(message)
    })?;
    let accepted = spans.len() as u64;
    if !spans.is_empty() {
        let now = now_micros();
        match shared.writer.store(spans, now).await {
            Ok(()) => {}
            Err(crate::writer::NotStored::Busy) => {
                metrics::counter!("traces_spans_total", "outcome" => "busy").increment(accepted);
                return Err(Refused::Busy);
            }
            Err(crate::writer::NotStored::Failed) => {
                return Err(Refused::Unavailable);
            }
        }
    }
    metrics::counter!("traces_spans_total", "outcome" => "accepted").increment(accepted);
    Ok(StatusCode::ACCEPTED)
}

fn gunzip(body: &[u8]) -> Result<Vec<u8>, Refused> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Refused::BadRequest("the body is not valid gzip".to_string()))?;
    if out.len() > MAX_BODY {
        return Err(Refused::BadRequest(format!(
            "the body is over {MAX_BODY} bytes once decompressed"
        )));
    }
    Ok(out)
}

type Params = Query<HashMap<String, String>>;

/// A required, non-empty parameter, lower-cased (names are stored in lower case).
fn required(params: &HashMap<String, String>, name: &str) -> Result<String, Refused> {
    match params.get(name).map(|v| v.trim()) {
        Some(value) if !value.is_empty() => Ok(value.to_lowercase()),
        _ => Err(Refused::BadRequest(format!("{name} is required"))),
    }
}

fn optional(params: &HashMap<String, String>, name: &str) -> Option<String> {
    params
        .get(name)
        .map(|v| v.trim().to_lowercase())
        .filter(|v| !v.is_empty() && v != "all")
}

fn number(params: &HashMap<String, String>, name: &str) -> Result<Option<u64>, Refused> {
    match params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(value) => value.parse().map(Some).map_err(|_| {
            Refused::BadRequest(format!(
                "{name} must be a non-negative whole number, not {value:?}"
            ))
        }),
    }
}

async fn services(State(shared): State<Shared>) -> Result<Json<Vec<String>>, Refused> {
    Ok(Json(blocking(&shared, |store| store.services()).await?))
}

async fn span_names(
    State(shared): State<Shared>,
    Query(params): Params,
) -> Result<Json<Vec<String>>, Refused> {
    let service = required(&params, "serviceName")?;
    Ok(Json(
        blocking(&shared, move |store| store.span_names(&service)).await?,
    ))
}

async fn remote_services(
    State(shared): State<Shared>,
    Query(params): Params,
) -> Result<Json<Vec<String>>, Refused> {
    let service = required(&params, "serviceName")?;
    Ok(Json(
        blocking(&shared, move |store| store.remote_services(&service)).await?,
    ))
}

/// The window of a query, in microseconds: `endTs` (ms, default now) back `lookback` (ms).
fn window(params: &HashMap<String, String>) -> Result<(u64, u64), Refused> {
    let end_ms = number(params, "endTs")?.unwrap_or(now_micros() / 1000);
    let lookback_ms = number(params, "lookback")?.unwrap_or(DEFAULT_LOOKBACK_MS);
    Ok((
        end_ms.saturating_mul(1000),
        lookback_ms.saturating_mul(1000),
    ))
}

/// Reads the parameters of `GET /traces` (Zipkin's names and defaults).
pub fn trace_query(params: &HashMap<String, String>) -> Result<TraceQuery, Refused> {
    let (end_ts, lookback) = window(params)?;
    let limit = number(params, "limit")?.unwrap_or(10);
    if limit == 0 || limit > MAX_LIMIT as u64 {
        return Err(Refused::BadRequest(format!(
            "limit must be from 1 to {MAX_LIMIT}"
        )));
    }
    let min_duration = number(params, "minDuration")?;
    let max_duration = number(params, "maxDuration")?;
    if let (Some(min), Some(max)) = (min_duration, max_duration)
        && max < min
    {
        return Err(Refused::BadRequest(
            "maxDuration must not be less than minDuration".to_string(),
        ));
    }
    let annotations = match params.get("annotationQuery").map(|q| q.trim()) {
        None | Some("") => Vec::new(),
        Some(query) => parse_annotation_query(query)?,
    };
    Ok(TraceQuery {
        service: optional(params, "serviceName"),
        remote_service: optional(params, "remoteServiceName"),
        span_name: optional(params, "spanName"),
        annotations,
        min_duration,
        max_duration,
        end_ts,
        lookback,
        limit: limit as usize,
    })
}

/// `error and http.method=GET`: terms joined by ` and `, each a key or a `key=value`.
fn parse_annotation_query(query: &str) -> Result<Vec<(String, Option<String>)>, Refused> {
    if query.len() > 4096 {
        return Err(Refused::BadRequest(
            "annotationQuery is longer than 4096 bytes".to_string(),
        ));
    }
    let terms: Vec<_> = query
        .split(" and ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|term| match term.split_once('=') {
            Some((key, value)) => (key.trim().to_string(), Some(value.trim().to_string())),
            None => (term.to_string(), None),
        })
        .collect();
    if terms.len() > 16 || terms.iter().any(|(key, _)| key.is_empty()) {
        return Err(Refused::BadRequest(
            "annotationQuery must be up to 16 terms joined by \" and \", each key or key=value"
                .to_string(),
        ));
    }
    Ok(terms)
}

async fn traces(
    State(shared): State<Shared>,
    Query(params): Params,
) -> Result<Json<Vec<Vec<serde_json::Value>>>, Refused> {
    let query = trace_query(&params)?;
    Ok(Json(
        blocking(&shared, move |store| store.traces(&query)).await?,
    ))
}

async fn trace(
    State(shared): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Vec<serde_json::Value>>, Refused> {
    let normalised =
        span::trace_id(&id).map_err(|e| Refused::BadRequest(format!("trace id {e}")))?;
    let mut found = blocking(&shared, move |store| store.traces_by_id(&[normalised])).await?;
    match found.pop() {
        Some(spans) => Ok(Json(spans)),
        None => Err(Refused::NotFound(format!("trace {id} not found"))),
    }
}

async fn trace_many(
    State(shared): State<Shared>,
    Query(params): Params,
) -> Result<Json<Vec<Vec<serde_json::Value>>>, Refused> {
    let ids = params
        .get("traceIds")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Refused::BadRequest("traceIds is required".to_string()))?;
    let ids: Vec<String> = ids
        .split(',')
        .take(MAX_LIMIT + 1)
        .map(|id| {
            span::trace_id(id.trim())
                .map_err(|e| Refused::BadRequest(format!("trace id {:?} {e}", id.trim())))
        })
        .collect::<Result<_, _>>()?;
    if ids.len() > MAX_LIMIT {
        return Err(Refused::BadRequest(format!(
            "at most {MAX_LIMIT} trace ids"
        )));
    }
    Ok(Json(
        blocking(&shared, move |store| store.traces_by_id(&ids)).await?,
    ))
}

async fn dependencies(
    State(shared): State<Shared>,
    Query(params): Params,
) -> Result<Json<Vec<crate::store::Link>>, Refused> {
    if number(&params, "endTs")?.is_none() {
        return Err(Refused::BadRequest("endTs is required".to_string()));
    }
    let (end_ts, lookback) = window(&params)?;
    Ok(Json(
        blocking(&shared, move |store| store.dependencies(end_ts, lookback)).await?,
    ))
}

async fn autocomplete_keys(State(shared): State<Shared>) -> Json<Vec<String>> {
    Json(shared.autocomplete_keys.as_ref().clone())
}

async fn autocomplete_values(
    State(shared): State<Shared>,
    Query(params): Params,
) -> Result<Json<Vec<String>>, Refused> {
    let key = params
        .get("key")
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Refused::BadRequest("key is required".to_string()))?;
    Ok(Json(
        blocking(&shared, move |store| store.tag_values(&key)).await?,
    ))
}
