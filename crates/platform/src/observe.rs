//! One log line and one set of metrics per request.
//!
//! Metrics are labelled by the matched route template (`/todo/{id}`), never the raw path, so a
//! scan of random URLs cannot blow up the number of series. A handler that routes by itself (the
//! gateway) names the route by putting a [`RouteLabel`] in the response's extensions. Probes (`/hc`, `/ready`, `/metrics`)
//! are counted but logged only at debug level: a gateway checks them every second.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use http::Method;

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
    let observation = Observation::begin(&request);
    let response = next.run(request).await;
    observation.finish(&response);
    response
}

/// One request being observed: counted in flight from [`Observation::begin`] until it is
/// finished or dropped, then counted, timed and logged by [`Observation::finish`].
pub(crate) struct Observation {
    start: Instant,
    method: Method,
    matched: Option<MatchedPath>,
    // Cheap clones (shared bytes): only logging uses them.
    uri: http::Uri,
    request_id: Option<http::HeaderValue>,
}

impl Observation {
    pub(crate) fn begin(request: &Request) -> Self {
        in_flight_gauge().increment(1.0);
        Observation {
            start: Instant::now(),
            method: request.method().clone(),
            matched: request.extensions().get::<MatchedPath>().cloned(),
            uri: request.uri().clone(),
            request_id: request.headers().get(REQUEST_ID).cloned(),
        }
    }

    pub(crate) fn finish(self, response: &Response) {
        let elapsed = self.start.elapsed();
        let route = match (response.extensions().get::<RouteLabel>(), &self.matched) {
            (Some(label), _) => &*label.0,
            (None, Some(matched)) => matched.as_str(),
            (None, None) => "unmatched",
        };
        let status = response.status().as_u16();
        let (requests, duration) = request_metrics(&self.method, route, status);
        requests.increment(1);
        duration.record(elapsed.as_secs_f64());

        if response.extensions().get::<AccessLogged>().is_some() {
            return;
        }
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let (method, path) = (&self.method, self.uri.path());
        if PROBES.contains(&path) {
            tracing::debug!(target: "access", %method, %path, status, latency_ms, request_id, "request");
        } else {
            tracing::info!(target: "access", %method, %path, status, latency_ms, request_id, "request");
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
    GAUGE.get_or_init(|| metrics::gauge!("http_requests_in_flight"))
}

/// Method and status pairs remembered per route and thread at most; others are looked up each time.
const MAX_KINDS_PER_ROUTE: usize = 64;

/// Metric handles by route, then method and status.
type Handles = HashMap<String, Vec<(Method, u16, metrics::Counter, metrics::Histogram)>>;

thread_local! {
    /// Handles already looked up on this thread: the recorder's registry hashes and allocates
    /// the labels on every lookup, which is most of the cost of counting a request.
    static HANDLES: RefCell<Handles> = RefCell::new(HashMap::new());
}

/// `http_requests_total` and `http_request_duration_seconds` for one kind of request.
fn request_metrics(
    method: &Method,
    route: &str,
    status: u16,
) -> (metrics::Counter, metrics::Histogram) {
    HANDLES.with_borrow_mut(|handles| {
        if let Some(found) = handles
            .get(route)
            .and_then(|kinds| kinds.iter().find(|k| k.0 == *method && k.1 == status))
        {
            return (found.2.clone(), found.3.clone());
        }
        // Methods outside RFC 9110's are one label: clients can invent any number of them.
        let method_label = match *method {
            Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::CONNECT
            | Method::OPTIONS
            | Method::TRACE
            | Method::PATCH => method.as_str(),
            _ => "other",
        };
        let counter = metrics::counter!(
            "http_requests_total",
            "method" => method_label.to_owned(),
            "route" => route.to_owned(),
            "status" => status.to_string()
        );
        let histogram = metrics::histogram!(
            "http_request_duration_seconds",
            "method" => method_label.to_owned(),
            "route" => route.to_owned()
        );
        let kinds = handles.entry(route.to_owned()).or_default();
        if kinds.len() < MAX_KINDS_PER_ROUTE {
            kinds.push((method.clone(), status, counter.clone(), histogram.clone()));
        }
        (counter, histogram)
    })
}
