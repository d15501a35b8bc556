//! The service contract as a router: `/hc`, `/ready` and `/metrics` next to the service's own
//! routes, and the layers every request passes through.

use std::future::Future;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::middleware::from_fn;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::errors::{error_response, json_error_bodies};
use crate::health::{self, Readiness};

/// The OpenAPI description of the contract endpoints, to merge into a service's own document.
pub fn contract_openapi() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(health::liveness, health::readiness, metrics))]
    struct Contract;
    <Contract as utoipa::OpenApi>::openapi()
}

/// How a service answers the errors the router produces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `{"status", "message"}` bodies, for JSON APIs.
    Json,
    /// Whatever the router gives (short or empty bodies), for pages and plain-text services.
    Plain,
}

/// A service's router with the contract endpoints, inside the per-request layers: what
/// [`contract_router`] makes, and every service serves.
pub type Contracted = RequestLayers<RouterHandler>;

/// Adds the contract endpoints and the per-request layers to a service's router.
pub fn contract_router(app: Router, readiness: &Readiness, errors: ErrorStyle) -> Contracted {
    let contract = Router::new()
        // The seeds' API answers /hc on any method; here on every standard one but TRACE and
        // CONNECT (which get 405 with `Allow`, as any method a route does not declare).
        .route(
            "/hc",
            get(health::liveness)
                .post(health::liveness)
                .put(health::liveness)
                .patch(health::liveness)
                .delete(health::liveness)
                .options(health::liveness),
        )
        .route("/ready", get(health::readiness))
        .route("/metrics", get(metrics))
        .with_state(readiness.clone());
    // Route-level: the matched route template (`/todo/{id}`) is only known inside the router;
    // it goes out with the response, for the request's metrics and log line.
    let routed = app
        .merge(contract)
        .route_layer(from_fn(crate::observe::matched_path_to_response));
    // JSON error bodies wrap the whole router as one service, not its routes (`Router::layer`):
    // axum adds the `Allow` header of a 405 after a route's own layers have run, and the message
    // names the allowed methods.
    let router = match errors {
        ErrorStyle::Json => {
            Router::new().fallback_service(tower::Layer::layer(&from_fn(json_error_bodies), routed))
        }
        ErrorStyle::Plain => routed,
    };
    RequestLayers::new(RouterHandler(router))
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "contract",
    responses((status = 200, description = "Prometheus text exposition format", body = String,
        content_type = "text/plain")))]
async fn metrics() -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::telemetry::render_metrics(),
    )
        .into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// What the per-request layers ([`RequestLayers`]) wrap: a service's router
/// ([`RouterHandler`]), or a handler that routes by itself (the gateway's). It is cloned for each
/// request, and the clone handles it. Along with the response it may name the route the request
/// took, for the request's metrics (and whether it logged the request itself); without one, the
/// route template the router matched counts.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Runs on the connection's handler before each request's clone is taken. A handler can
    /// give its connection state of its own here, so that requests on different threads do not
    /// all write the same reference counts. Does nothing by default.
    fn prepare(&mut self) {}

    /// `started` is when the request began, as its metrics count it: a handler that times the
    /// request too can take it rather than read the clock again.
    fn handle(
        self,
        request: axum::extract::Request,
        started: std::time::Instant,
    ) -> impl Future<Output = (Response, Option<crate::observe::RouteLabel>)> + Send + 'static;
}

/// A service's router as a [`Handler`]: axum routes the request; the route template it matched
/// names it.
#[derive(Clone)]
pub struct RouterHandler(Router);

impl Handler for RouterHandler {
    fn handle(
        self,
        request: axum::extract::Request,
        _started: std::time::Instant,
    ) -> impl Future<Output = (Response, Option<crate::observe::RouteLabel>)> + Send + 'static {
        use tower::ServiceExt;
        async move {
            match self.0.oneshot(request).await {
                Ok(response) => (response, None),
                Err(never) => match never {},
            }
        }
    }
}

/// The contract's per-request layers, around a [`Handler`], in one future: the request id
/// (`X-Request-Id`, passed through or generated, and returned), the request's metrics and log
/// line, and a caught panic answered 500. Every service's requests, and the gateway's, pass
/// through this one implementation.
#[derive(Clone)]
pub struct RequestLayers<H> {
    handler: H,
    /// Whether the handler passes the request's trace context on (see
    /// [`crate::otel::RequestSpan::start`]).
    forwards_trace: bool,
}

impl<H: Handler> RequestLayers<H> {
    pub fn new(handler: H) -> Self {
        // Install the recorder now: metrics recorded before it exists are lost.
        crate::telemetry::metrics_handle();
        RequestLayers {
            handler,
            forwards_trace: false,
        }
    }

    /// For a handler that calls other services for its requests, or forwards them: their
    /// propagation headers are rewritten to name the request's span, which makes the calls
    /// its children.
    pub fn forwarding_trace_context(mut self) -> Self {
        self.forwards_trace = true;
        self
    }

    /// The request's future, which owns what it needs: awaited in place by a connection loop
    /// of the caller's (the gateway's HTTP/1 loop), boxed for hyper.
    pub fn call_layered(
        &mut self,
        mut request: http::Request<axum::body::Body>,
    ) -> impl Future<Output = Response> + Send + 'static {
        use futures_util::FutureExt;
        let request_id = match request.headers().get(crate::observe::REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
                let id = HeaderValue::from_str(text).expect("a UUID is a valid header value");
                request
                    .headers_mut()
                    .insert(crate::observe::REQUEST_ID, id.clone());
                id
            }
        };
        let mut observation =
            crate::observe::Observation::begin(&request, Some(request_id.clone()));
        let span = crate::otel::RequestSpan::start(&mut request, self.forwards_trace);
        observation.trace_id = span.as_ref().map(crate::otel::RequestSpan::trace_id);
        self.handler.prepare();
        let handler = self.handler.clone();
        let started = observation.started();
        // While the handler runs, the request's span is the current context: spans the handler
        // starts (database queries, calls) are its children.
        let handled = handler.handle(request, started);
        let handled = match span.as_ref().and_then(crate::otel::RequestSpan::context) {
            Some(context) => futures_util::future::Either::Left(
                opentelemetry::trace::FutureExt::with_context(handled, context.clone()),
            ),
            None => futures_util::future::Either::Right(handled),
        };
        async move {
            let (mut response, route) =
                match std::panic::AssertUnwindSafe(handled).catch_unwind().await {
                    Ok(answered) => answered,
                    Err(panic) => (panic_response(panic), None),
                };
            response
                .headers_mut()
                .entry(crate::observe::REQUEST_ID)
                .or_insert(request_id);
            if let Some(span) = span {
                let route = crate::observe::route_of(&response, route.as_ref());
                span.finish(route, response.status().as_u16());
            }
            observation.finish_as(&response, route.as_ref());
            response
        }
    }
}

impl<H: Handler, B> tower::Service<http::Request<B>> for RequestLayers<H>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Response, std::convert::Infallible>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use futures_util::FutureExt;
        // `map`, not an `async` block around it: that would hold the future twice.
        Box::pin(
            self.call_layered(request.map(axum::body::Body::new))
                .map(Ok),
        )
    }
}
