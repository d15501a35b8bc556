//! One log line and one set of metrics per request.
//!
//! Metrics are labelled by the matched route template (`/todo/{id}`), never the raw path, so a
//! scan of random URLs cannot blow up the number of series. A handler that routes by itself (the
//! gateway) names the route by returning a [`RouteLabel`] with its response. Probes (`/hc`, `/ready`, `/metrics`)
//! are counted but logged only at debug level: a gateway checks them every second.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;

/// Header carrying the request id, passed through or generated.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The route a response belongs to, for handlers that route by themselves. Takes precedence over
/// axum's matched path.
///
/// Cheap to copy: the name is interned, so a handler hands one out per request without touching
/// a reference count that every thread shares.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel {
    pub name: &'static str,
    /// Set by a handler that writes its own access log line (the gateway): the request is still
    /// counted in the metrics, but not logged a second time.
    pub access_logged: bool,
}

impl RouteLabel {
    /// The label `name`. Names are kept for the life of the process, once each however often
    /// they are made: make labels from configuration, never from requests.
    pub fn new(name: &str) -> Self {
        static NAMES: std::sync::Mutex<BTreeSet<&'static str>> =
            std::sync::Mutex::new(BTreeSet::new());
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        let name = match names.get(name) {
            Some(&known) => known,
            None => {
                let leaked: &'static str = Box::leak(name.into());
                names.insert(leaked);
                leaked
            }
        };
        RouteLabel {
            name,
            access_logged: false,
        }
    }
}

/// Copies the route template the router matched into the response, where the per-request
/// layers (outside the router) look for it.
pub(crate) async fn matched_path_to_response(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(matched);
    }
    response
}

/// One request being observed: counted in flight from [`Observation::begin`] until it is
/// finished or dropped, then counted, timed and logged by [`Observation::finish`].
pub(crate) struct Observation {
    start: Instant,
    method: Method,
    // Cheap clones (shared bytes): only logging uses them.
    uri: http::Uri,
    request_id: Option<http::HeaderValue>,
    /// The request's trace id, when it is traced.
    pub(crate) trace_id: Option<opentelemetry::trace::TraceId>,
}

/// The route a request took, for its metrics and span: as the handler names it, else the route
/// template the router matched.
pub(crate) fn route_of<'a>(response: &'a Response, label: Option<&'a RouteLabel>) -> &'a str {
    match (label, response.extensions().get::<MatchedPath>()) {
        (Some(label), _) => label.name,
        (None, Some(matched)) => matched.as_str(),
        (None, None) => "unmatched",
    }
}

impl Observation {
    /// `request_id` is the request's `X-Request-Id`, which the caller has at hand.
    pub(crate) fn begin(request: &Request, request_id: Option<http::HeaderValue>) -> Self {
        in_flight_gauge().increment(1.0);
        Observation {
            start: Instant::now(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            request_id,
            trace_id: None,
        }
    }

    /// When the request began.
    pub(crate) fn started(&self) -> Instant {
        self.start
    }

    /// Counts, times and logs the request, under the route `label` names (from a
    /// [`crate::Handler`] that routes by itself), else the route template the router matched.
    pub(crate) fn finish_as(self, response: &Response, label: Option<&RouteLabel>) {
        let elapsed = self.start.elapsed();
        let route = route_of(response, label);
        let status = response.status().as_u16();
        count_request(&self.method, route, status, elapsed);

        if label.is_some_and(|label| label.access_logged) {
            return;
        }
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let (method, path) = (&self.method, self.uri.path());
        // Formatted only when the line is written.
        let trace_id = self.trace_id.map(tracing::field::display);
        if crate::health::PROBES.contains(&path) {
            tracing::debug!(target: "access", %method, %path, status, latency_ms, request_id, trace_id, "request");
        } else {
            tracing::info!(target: "access", %method, %path, status, latency_ms, request_id, trace_id, "request");
        }
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        // Finished or abandoned (the client went away), the request is no longer in flight.
        in_flight_gauge().decrement(1.0);
    }
}

fn in_flight_gauge() -> &'static metrics::Gauge {
    static GAUGE: std::sync::OnceLock<metrics::Gauge> = std::sync::OnceLock::new();
    GAUGE.get_or_init(|| {
        // A handle made before the recorder is installed would record nowhere.
        crate::telemetry::metrics_handle();
        metrics::describe_gauge!("http_requests_in_flight", "HTTP requests being handled now");
        metrics::gauge!("http_requests_in_flight")
    })
}

/// Method and status pairs remembered per route and thread at most; others are looked up each time.
const MAX_KINDS_PER_ROUTE: usize = 64;

/// Metric handles by route, then method and status. Routes are templates and configured names,
/// never raw paths, so a fast hash that clients could collide does no harm.
type Handles =
    rustc_hash::FxHashMap<String, Vec<(Method, u16, metrics::Counter, metrics::Histogram)>>;

thread_local! {
    /// Handles already looked up on this thread: a lookup builds the labels and hashes them into
    /// the recorder's registry.
    static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
}

/// Counts a request in `http_requests_total` and `http_request_duration_seconds`.
fn count_request(method: &Method, route: &str, status: u16, elapsed: std::time::Duration) {
    HANDLES.with_borrow_mut(|handles| {
        if let Some(found) = handles
            .get(route)
            .and_then(|kinds| kinds.iter().find(|k| k.0 == *method && k.1 == status))
        {
            found.2.increment(1);
            found.3.record(elapsed.as_secs_f64());
            return;
        }
        // Methods outside RFC 9110's are one label: clients can invent any number of them.
        let method_label = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::CONNECT => "CONNECT",
            Method::OPTIONS => "OPTIONS",
            Method::TRACE => "TRACE",
            Method::PATCH => "PATCH",
            _ => "other",
        };
        describe_once();
        let counter = metrics::counter!(
            "http_requests_total",
            "method" => method_label,
            "route" => route.to_owned(),
            "status" => itoa::Buffer::new().format(status).to_owned(),
        );
        let histogram = metrics::histogram!(
            "http_request_duration_seconds",
            "method" => method_label,
            "route" => route.to_owned(),
        );
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
        let kinds = handles.entry(route.to_owned()).or_default();
        if kinds.len() < MAX_KINDS_PER_ROUTE {
            kinds.push((method.clone(), status, counter, histogram));
        }
    })
}

/// The help lines of the per-request metrics, given to the recorder once.
fn describe_once() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        crate::telemetry::metrics_handle();
        metrics::describe_counter!(
            "http_requests_total",
            "HTTP requests answered, by method, route template and status"
        );
        metrics::describe_histogram!(
            "http_request_duration_seconds",
            metrics::Unit::Seconds,
            "Time from receiving a request to producing its response head"
        );
    });
}
