//! The request path: check and normalise the target (`target`), route, apply the route's
//! limits and authentication, rewrite headers, pick a server, send, retry on another server when
//! that is safe, stream the answer back.
//!
//! Order of the steps, and why: the target is normalised before anything looks at it, so that
//! routing, limits, authentication and the request sent upstream all see one path and one host.
//! CONNECT, and TRACE on a route that does not allow it, get 405. The rate limit comes before
//! authentication, so that guessing passwords is rate limited too (and costs no bcrypt past it).
//!
//! Retry rules. A request that never reached a server (connection refused, reset before it was
//! sent) is retried whatever its method. An idempotent request (GET, HEAD, OPTIONS, PUT, DELETE,
//! TRACE) is also retried after a lost connection, a response-head timeout, or a 502/503/504.
//! Only bodies kept in memory (up to `retry_buffer`) can be sent twice. Every retry must fit the
//! upstream's retry budget, so a failing upstream never sees more than its usual load plus the
//! budget's fraction.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::header::{self};
use http::{StatusCode, Version};
use platform::observe::RouteLabel;

use crate::access_log::{AccessLog, Address};
use crate::body::{ClientBodyError, RequestBody};
use crate::client::{Outgoing, UpstreamBody};
use crate::error::ProxyError;
use crate::headers;
use crate::routing::{LiveRoutes, RouteTable};
use crate::server::tunnel::UpstreamUpgrade;
use crate::upstream::Upstream;
use tower::retry::budget::Budget as _;

mod log_entry;
mod response;
mod steps;

use steps::{Exchange, Routed, Step as _};

/// What a listener's requests share.
pub(crate) struct ListenerState {
    pub(crate) routes: Arc<LiveRoutes>,
    pub(crate) client_body_timeout: Duration,
    pub(crate) access_log: Arc<AccessLog>,
    /// `http`, or `https` on a TLS listener: what `X-Forwarded-Proto` says.
    pub(crate) scheme: &'static str,
}

/// Which server answered, and how long its response head took, for the access log.
#[derive(Default)]
struct Upstreamed {
    server: Option<Address>,
    head_time: Option<Duration>,
}

/// A listener's request handler.
///
/// A request holds its connection's [`View`] while it runs: the listener and the route table as
/// they were at the connection's latest request. A view belongs to one connection, so its
/// reference count stays on that connection's thread, where one shared by every connection
/// would move between cores on every request, as would the table's lock.
#[derive(Clone)]
pub(crate) struct Proxy(Arc<View>);

pub(crate) struct View {
    listener: Arc<ListenerState>,
    routes: Arc<RouteTable>,
    /// False for the listener's first view, which every new connection starts with.
    own: bool,
}

impl Proxy {
    pub(crate) fn new(listener: Arc<ListenerState>) -> Self {
        let routes = listener.routes.current();
        Proxy(Arc::new(View {
            listener,
            routes,
            own: false,
        }))
    }
}

/// A request counted in flight on its server until its response body ends or is dropped. It
/// reaches the server through the connection's view, which keeps the route table and its pools
/// alive: a reference count of the server's own would be written by every worker thread.
pub(crate) struct InFlight {
    view: Proxy,
    route: usize,
    server: usize,
    /// A retry, counted against the pool's `max_retries`.
    retry: bool,
}

impl InFlight {
    /// An attempt in flight, or `None` when the pool's limits refuse it.
    fn begin(view: &Proxy, route: usize, server: usize, retry: bool) -> Option<Self> {
        let upstream = upstream_of(view, route);
        if !upstream.enter(retry) {
            return None;
        }
        upstream.begin(server);
        Some(InFlight {
            view: view.clone(),
            route,
            server,
            retry,
        })
    }

    fn upstream(&self) -> &Upstream {
        upstream_of(&self.view, self.route)
    }
}

fn upstream_of(view: &Proxy, route: usize) -> &Upstream {
    view.0
        .routes
        .route(route)
        .upstream
        .as_deref()
        .expect("only routes with an upstream forward")
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream().end(self.server);
        self.upstream().leave(self.retry);
    }
}

impl AsRef<AccessLog> for Proxy {
    fn as_ref(&self) -> &AccessLog {
        &self.0.listener.access_log
    }
}

impl platform::Handler for Proxy {
    /// A view of the connection's own, made at its first request and after a reload. An idle
    /// connection keeps the table of its last request until its next one or its end.
    fn prepare(&mut self) {
        let view = &self.0;
        if view.own && view.listener.routes.is_current(&view.routes) {
            return;
        }
        let listener = Arc::clone(&view.listener);
        let routes = listener.routes.current();
        self.0 = Arc::new(View {
            listener,
            routes,
            own: true,
        });
    }

    fn handle(
        self,
        request: Request,
        started: Instant,
    ) -> impl Future<Output = (Response, Option<RouteLabel>)> + Send + 'static {
        handle(self, request, started)
    }
}

async fn handle(
    proxy: Proxy,
    request: Request,
    started: Instant,
) -> (Response, Option<RouteLabel>) {
    let mut exchange = Exchange {
        proxy,
        started,
        label: unmatched(),
        upstreamed: Upstreamed::default(),
    };
    let response = steps::PATH
        .run(&mut exchange, request)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let label = exchange.label;
    (response, Some(label))
}

fn unmatched() -> RouteLabel {
    static UNMATCHED: std::sync::OnceLock<RouteLabel> = std::sync::OnceLock::new();
    *UNMATCHED.get_or_init(|| RouteLabel::new("unmatched"))
}

/// Sends the request to a server of the route's upstream, retrying on another when that is safe.
async fn forward(
    exchange: &mut Exchange,
    routed: &mut Routed,
    request: Request,
) -> Result<Response, ProxyError> {
    let proxy = &exchange.proxy;
    let route = proxy.0.routes.route(routed.route);
    let target = &routed.target;
    let upstreamed = &mut exchange.upstreamed;
    let state = &*proxy.0.listener;
    // Request smuggling: the connection loop (`server::http1`, on `wire`'s grammar) and hyper's
    // HTTP/2 frame every request before it gets here, refusing conflicting framing. The request
    // sent upstream is framed anew, so no bytes of one request can become another.
    let host = target.host_value().cloned().ok_or(ProxyError::NoHost)?;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    // Only HTTP/1.1 switches protocols (HTTP/2 has no `Upgrade`).
    let upgrade = if request.version() == Version::HTTP_11 {
        headers::upgrade_of(request.headers())
    } else {
        None
    };

    let (mut parts, body) = request.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers, upgrade.as_ref());
    if route.auth.is_some() && !route.pass_authorization {
        // The credentials were for the gateway.
        parts.headers.remove(header::AUTHORIZATION);
    }
    let forwarded = headers::forwarded(
        &mut parts.headers,
        &host,
        target.host_changed,
        peer,
        state.scheme,
    );
    let path = if route.strip_prefix {
        route
            .upstream_path(target.path_and_query.as_str())
            .parse()
            .map_err(|e| ProxyError::Internal(format!("path: {e}")))?
    } else {
        // Unchanged, the path shares the request's bytes rather than being parsed again.
        target.path_and_query.clone()
    };

    let upstream = route
        .upstream
        .as_ref()
        .ok_or_else(|| ProxyError::Internal("route has no upstream".into()))?;
    if let Some(max) = route.max_body_size {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(ProxyError::BodyTooLarge(max));
        }
    }
    let limits = crate::body::BodyLimits {
        keep: upstream.retry_buffer,
        idle: state.client_body_timeout,
        max: route.max_body_size,
    };
    let mut body = if route.request_buffering {
        RequestBody::buffer(body, limits).await
    } else {
        RequestBody::prepare(body, limits).await
    }
    .map_err(|e| client_body_error(e, route.max_body_size))?;
    let idempotent = parts.method.is_idempotent();
    upstream.budget.deposit();

    let mut tried: Vec<usize> = Vec::with_capacity(2);
    let mut last_error: Option<ProxyError> = None;
    loop {
        let Some(index) = upstream.pick(&tried) else {
            return Err(last_error.unwrap_or(ProxyError::NoServer));
        };
        tried.push(index);
        let server = &upstream.servers[index];
        let retry = tried.len() > 1;
        let Some(in_flight) = InFlight::begin(proxy, route.index, index, retry) else {
            // Envoy's overflow: a first attempt is refused at once, a retry is not made.
            return Err(last_error.unwrap_or(ProxyError::Overloaded));
        };

        let (attempt_body, replayable) = body.take()?;
        // A CLIENT span per attempt when the request is traced: a retry shows as a second one.
        let span = platform::otel::ClientSpan::start_current(
            parts.method.as_str(),
            || format!("http://{}{}", server.address, path.as_str()),
            &upstream.name,
        );
        if let Some(span) = &span {
            span.replace_headers(&mut parts.headers);
        }
        let outgoing = Outgoing {
            method: &parts.method,
            path: path.as_str(),
            headers: &parts.headers,
            extra: &forwarded,
        };

        let may_retry = |upstream: &Upstream, tried: &[usize]| {
            let retry = replayable
                && tried.len() < upstream.max_attempts as usize
                && upstream.retry_allowed()
                && upstream.budget.withdraw();
            if retry {
                upstream.metrics.retries.increment(1);
            }
            retry
        };
        let started = Instant::now();
        let sending =
            upstream
                .client
                .send(&server.address, outgoing, attempt_body, upgrade.is_some());
        let sent = crate::coarse_timer::timeout(upstream.response_timeout, sending).await;
        upstreamed.server = Some(Address::of(&server.address));
        let head_time = started.elapsed();
        upstreamed.head_time = Some(head_time);
        let status = match &sent {
            Ok(Ok(response)) => Some(response.status()),
            _ => None,
        };
        upstream.metrics.record(status, head_time);
        if let Some(span) = span {
            span.finish(status.map(|s| s.as_u16()));
        }
        match sent {
            Ok(Ok(mut response)) => {
                let status = response.status();
                if matches!(
                    status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) {
                    upstream.record_failure(index, status.as_str());
                    if idempotent && may_retry(upstream, &tried) {
                        tracing::debug!(upstream = %upstream.name, server = %server.address, %status, "retrying on another server");
                        continue;
                    }
                } else {
                    upstream.record_success(index, head_time);
                }
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    return switch_protocols(response, upgrade.is_some(), upstream);
                }
                headers::remove_hop_by_hop(response.headers_mut(), None);
                return Ok(match response::pass_on(response, in_flight) {
                    Ok(response) => response,
                    // Boxed: rare, and unboxed it would make every request's future larger (`tests`).
                    Err(unread) => Box::pin(response::collect_small(*unread)).await,
                });
            }
            Ok(Err(error)) => {
                if let Some(answer) = crate::body::client_fault(&error, route.max_body_size) {
                    return Err(answer);
                }
                let never_sent = error.never_sent();
                let cause = error_chain(&error);
                upstream.record_failure(index, &cause);
                last_error = Some(ProxyError::Unreachable {
                    upstream: upstream.name.clone(),
                    server: server.address.clone(),
                    cause,
                });
                if (never_sent || idempotent) && may_retry(upstream, &tried) {
                    tracing::debug!(upstream = %upstream.name, server = %server.address, never_sent, "retrying on another server");
                    continue;
                }
                return Err(last_error.take().expect("just set"));
            }
            Err(_elapsed) => {
                upstream.record_failure(index, "timeout");
                last_error = Some(ProxyError::Timeout {
                    upstream: upstream.name.clone(),
                    server: server.address.clone(),
                    timeout: upstream.response_timeout,
                });
                if idempotent && may_retry(upstream, &tried) {
                    continue;
                }
                return Err(last_error.take().expect("just set"));
            }
        }
    }
}

fn client_body_error(error: ClientBodyError, max: Option<u64>) -> ProxyError {
    match error {
        ClientBodyError::Timeout => ProxyError::ClientBodyTimeout,
        ClientBodyError::TooLarge => ProxyError::BodyTooLarge(max.unwrap_or_default()),
        ClientBodyError::Broken(cause) => {
            tracing::debug!(%cause, "request body ended early");
            ProxyError::ClientBodyBroken
        }
        ClientBodyError::Spill(cause) => {
            ProxyError::Internal(format!("request buffering: {cause}"))
        }
    }
}

/// The upstream agreed to switch protocols (a WebSocket): the `101` goes to the client with the
/// upstream's end of the new protocol, which the client's connection joins to its own
/// (`server::tunnel`). A `101` to a request that did not ask for one cannot be passed on.
fn switch_protocols(
    mut upstream_response: http::Response<UpstreamBody>,
    asked: bool,
    upstream: &Upstream,
) -> Result<Response, ProxyError> {
    if !asked {
        return Err(ProxyError::UnaskedSwitch(upstream.name.clone()));
    }
    let upgrade = UpstreamUpgrade {
        upgrade: hyper::upgrade::on(&mut upstream_response),
        idle_timeout: upstream.read_timeout,
    };
    let (parts, _) = upstream_response.into_parts();
    let mut response = Response::from_parts(parts, Body::empty());
    response.extensions_mut().insert(upgrade);
    Ok(response)
}

/// An error and its causes on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, found from its type alone.
    fn future_size<A, B, C, F: Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request's state lives in the future `handle` returns, so its size is copied and
    /// zeroed per request. The rare paths (upgrades, new connections, streamed bodies, unread
    /// error bodies) are boxed to keep it small: today it is about 7.4 KiB in the test profile,
    /// and unboxing them takes it over 8 KiB, which this test refuses.
    #[test]
    fn a_request_future_stays_small() {
        let size = future_size(handle);
        assert!(size < 8 * 1024, "handle's future grew to {size} bytes");
    }
}
