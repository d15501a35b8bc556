//! The request path: route, rewrite headers, pick a server, send, retry on another server when
//! that is safe, stream the answer back.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Version};
use hyper_util::rt::TokioIo;
use platform::observe::RouteLabel;

use crate::access_log::{AccessLog, Address, Entry, Logged};
use crate::body::{ClientBodyError, RequestBody, Tracked};
use crate::client::{Outgoing, UpstreamBody};
use crate::compress;
use crate::error::ProxyError;
use crate::headers;
use crate::routing::RouteTable;
use crate::upstream::Upstream;
use platform::zero_copy::ZeroCopy;

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

/// The route table in force; a reload swaps it. Requests in flight keep the table (and the
/// upstream pools) they started with.
#[derive(Default)]
pub(crate) struct LiveRoutes {
    table: std::sync::RwLock<Arc<RouteTable>>,
    /// Counts replacements, so that a connection sees its copy is stale without the lock.
    version: AtomicU64,
}

impl LiveRoutes {
    pub(crate) fn current(&self) -> Arc<RouteTable> {
        self.versioned().1
    }

    /// The table and its version.
    fn versioned(&self) -> (u64, Arc<RouteTable>) {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        // Replaced under the write lock, so the pair matches.
        (self.version.load(Ordering::Acquire), Arc::clone(&table))
    }

    pub(crate) fn replace(&self, table: RouteTable) {
        let mut current = self.table.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(table);
        self.version.fetch_add(1, Ordering::Release);
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
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
    version: u64,
    /// False for the listener's first view, which every new connection starts with.
    own: bool,
}

impl Proxy {
    pub(crate) fn new(listener: Arc<ListenerState>) -> Self {
        let (version, routes) = listener.routes.versioned();
        Proxy(Arc::new(View {
            listener,
            routes,
            version,
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
}

impl InFlight {
    fn begin(view: &Proxy, route: usize, server: usize) -> Self {
        let in_flight = InFlight {
            view: view.clone(),
            route,
            server,
        };
        in_flight.upstream().begin(server);
        in_flight
    }

    fn upstream(&self) -> &Upstream {
        self.view
            .0
            .routes
            .route(self.route)
            .upstream
            .as_deref()
            .expect("only routes with an upstream forward")
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream().end(self.server);
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
        if view.own && view.version == view.listener.routes.version() {
            return;
        }
        let listener = Arc::clone(&view.listener);
        let (version, routes) = listener.routes.versioned();
        self.0 = Arc::new(View {
            listener,
            routes,
            version,
            own: true,
        });
    }

    fn handle(
        self,
        request: Request,
        started: Instant,
    ) -> impl Future<Output = (Response, RouteLabel)> + Send + 'static {
        handle(self, request, started)
    }
}

async fn handle(proxy: Proxy, request: Request, started: Instant) -> (Response, RouteLabel) {
    let (state, routes) = (&*proxy.0.listener, &proxy.0.routes);
    let route = routes.find(host_of(&request), request.uri().path());
    let mut label = route.map_or_else(unmatched, |r| r.label);
    let entry = state
        .access_log
        .enabled()
        .then(|| entry_for(&request, &label, started));
    let mut upstreamed = Upstreamed::default();
    let mut response = match route {
        None => {
            let host = host_of(&request).unwrap_or("").to_string();
            let path = request.uri().path().to_string();
            ProxyError::NoRoute { host, path }.into_response()
        }
        Some(route) if let Err(seconds) = rate_allowed(route, &request) => {
            ProxyError::RateLimited(seconds).into_response()
        }
        Some(route) if !authorized(route, request.headers()).await => {
            let (_, challenge) = route.auth.as_ref().expect("only routes with auth refuse");
            ProxyError::Unauthorized(challenge.clone()).into_response()
        }
        Some(route) => {
            let encoding = route
                .compress
                .then(|| compress::negotiate(request.method(), request.headers()))
                .flatten();
            let outcome = match &route.files {
                Some(files) => {
                    let rest = route.rest_of(request.uri().path());
                    let served = files.serve(request.method(), rest, request.headers()).await;
                    // Zero copy only for a body that reaches the client as it is.
                    let (status, headers) = served.head();
                    let compressed =
                        route.compress && compress::compresses(encoding, status, headers);
                    let zero_copy = ZeroCopy::of(&request).filter(|_| !compressed);
                    Ok(served.into_response(zero_copy))
                }
                None => forward(&proxy, route, request, &mut upstreamed).await,
            };
            match outcome {
                Ok(response) if route.compress => compress::apply(response, encoding),
                Ok(response) => response,
                Err(error) => error.into_response(),
            }
        }
    };
    if let Some(mut entry) = entry {
        entry.status = response.status().as_u16();
        entry.head_bytes = head_bytes(&response);
        entry.upstream_addr = upstreamed.server;
        entry.upstream_response_time = upstreamed.head_time;
        let log = proxy.clone();
        response = response.map(|body| Body::new(Logged::new(body, entry, log)));
        label.access_logged = true;
    }
    (response, label)
}

fn unmatched() -> RouteLabel {
    static UNMATCHED: std::sync::OnceLock<RouteLabel> = std::sync::OnceLock::new();
    *UNMATCHED.get_or_init(|| RouteLabel::new("unmatched"))
}

/// The route's rate limit for the client's address: `Err(seconds to wait)` when over it.
fn rate_allowed(route: &crate::routing::Route, request: &Request) -> Result<(), u64> {
    let Some(limiter) = &route.rate_limit else {
        return Ok(());
    };
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip());
    limiter.check(client)
}

/// Whether the route lets the request through: no authentication, or a user of its file.
async fn authorized(route: &crate::routing::Route, headers: &http::HeaderMap) -> bool {
    match &route.auth {
        None => true,
        Some((users, _)) => users.allows(headers).await,
    }
}

/// The access log's view of a request, taken before the request is forwarded.
fn entry_for(request: &Request, route: &RouteLabel, started: Instant) -> Entry {
    // One pass over the headers finds the logged ones and their size on the wire, where a lookup
    // for each would hash its name.
    let (mut referer, mut user_agent, mut forwarded_for, mut request_id) = (None, None, None, None);
    let (mut body_len, mut wire_len) = (0, 0);
    for (name, value) in request.headers() {
        wire_len += name.as_str().len() + value.len() + 4;
        let slot = if name == header::REFERER {
            &mut referer
        } else if name == header::USER_AGENT {
            &mut user_agent
        } else if name == headers::X_FORWARDED_FOR {
            &mut forwarded_for
        } else if name == platform::observe::REQUEST_ID {
            &mut request_id
        } else {
            if name == header::CONTENT_LENGTH && body_len == 0 {
                body_len = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            continue;
        };
        if slot.is_none() {
            *slot = Some(value.clone());
        }
    }
    let request_uri = request.uri().path_and_query().cloned();
    let uri_len = request_uri.as_ref().map_or(1, |p| p.as_str().len());
    let version = match request.version() {
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    Entry {
        started,
        remote_addr: request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
        method: request.method().clone(),
        request_length: (request.method().as_str().len() + uri_len + 12 + wire_len + 2) as u64
            + body_len,
        request_uri,
        version,
        referer,
        user_agent,
        forwarded_for,
        request_id,
        route: route.name,
        status: 0,
        head_bytes: 0,
        upstream_addr: None,
        upstream_response_time: None,
    }
}

/// Bytes the header lines take on the wire (`name: value\r\n`).
fn wire_len(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// About how many bytes the response head takes on the wire.
fn head_bytes(response: &Response) -> u64 {
    let headers = wire_len(response.headers());
    // Status line, Date and Content-Length or chunked framing that hyper adds, final CRLF.
    (headers + 17 + 37 + 2) as u64
}

fn host_of(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
}

async fn forward(
    proxy: &Proxy,
    route: &crate::routing::Route,
    mut request: Request,
    upstreamed: &mut Upstreamed,
) -> Result<Response, ProxyError> {
    let state = &*proxy.0.listener;
    // Request smuggling: conflicting Content-Lengths, a Transfer-Encoding whose last coding is
    // not chunked, Transfer-Encoding in HTTP/1.0, and Transfer-Encoding with Content-Length are
    // answered 400 before a request gets here (hyper's parser and `platform::framing`). The
    // request sent upstream is framed anew either way, so no bytes of one request can become
    // another.
    let headers_in = request.headers();
    let host = match headers_in.get(header::HOST) {
        Some(host) => host.clone(),
        // HTTP/2 carries the host in the URI.
        None => request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or(ProxyError::NoHost)?,
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    let upgrade = headers::upgrade_of(request.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));

    let (mut parts, body) = request.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers, upgrade.as_ref());
    let forwarded = headers::forwarded(&mut parts.headers, &host, peer, state.scheme);
    let path = match parts.uri.path_and_query() {
        // Unchanged, the path shares the request's bytes rather than being parsed again.
        Some(path) if !route.strip_prefix => path.clone(),
        path => route
            .upstream_path(path.map_or("/", PathAndQuery::as_str))
            .parse()
            .map_err(|e| ProxyError::Internal(format!("path: {e}")))?,
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
    let mut body = RequestBody::prepare(
        body,
        upstream.retry_buffer,
        state.client_body_timeout,
        route.max_body_size,
    )
    .await
    .map_err(|e| client_body_error(e, route.max_body_size))?;
    let idempotent = is_idempotent(&parts.method);
    upstream.budget.deposit();

    let mut tried: Vec<usize> = Vec::with_capacity(2);
    let mut last_error: Option<ProxyError> = None;
    loop {
        let Some(index) = upstream.pick(&tried) else {
            return Err(last_error.unwrap_or_else(|| ProxyError::NoServer(upstream.name.clone())));
        };
        tried.push(index);
        let server = &upstream.servers[index];
        let in_flight = InFlight::begin(proxy, route.index, index);

        let (attempt_body, replayable) = body.take();
        let outgoing = Outgoing {
            method: &parts.method,
            path: path.as_str(),
            headers: &parts.headers,
            extra: &forwarded,
        };

        let may_retry = |upstream: &Upstream, tried: &[usize]| {
            let retry = replayable
                && tried.len() < upstream.max_attempts as usize
                && upstream.budget.withdraw();
            if retry {
                upstream.metrics.retries.increment(1);
            }
            retry
        };
        let started = Instant::now();
        let sending = upstream.client.send(
            &server.address,
            outgoing,
            attempt_body,
            client_upgrade.is_some(),
        );
        let sent = platform::coarse_timer::timeout(upstream.response_timeout, sending).await;
        upstreamed.server = Some(Address::of(&server.address));
        let head_time = started.elapsed();
        upstreamed.head_time = Some(head_time);
        let status = match &sent {
            Ok(Ok(response)) => Some(response.status()),
            _ => None,
        };
        upstream.metrics.record(status, head_time);
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
                    return Ok(switch_protocols(response, client_upgrade));
                }
                headers::remove_hop_by_hop(response.headers_mut(), None);
                return Ok(match pass_on(response, in_flight) {
                    Ok(response) => response,
                    // Boxed: rare, and its future would make every request's larger.
                    Err(unread) => Box::pin(collect_small(*unread)).await,
                });
            }
            Ok(Err(error)) => {
                if let Some(client) = error.client_body() {
                    return Err(match client {
                        ClientBodyError::Timeout => ProxyError::ClientBodyTimeout,
                        ClientBodyError::TooLarge => {
                            ProxyError::BodyTooLarge(route.max_body_size.unwrap_or_default())
                        }
                        ClientBodyError::Broken(_) => ProxyError::ClientBodyBroken,
                    });
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

/// Bodies up to this size with a known length are read whole before the response is passed on
/// (as nginx's proxy buffering does): the client then gets head and body in one write instead of
/// two, and the upstream connection is free for the next request sooner.
const BUFFER_RESPONSES_UP_TO: u64 = 16 * 1024;

/// Turns the upstream's response into the client's: small bodies whole, others streamed. A small
/// body that did not come with the head is handed back, to be read by [`collect_small`].
fn pass_on(
    response: http::Response<UpstreamBody>,
    in_flight: InFlight,
) -> Result<Response, Box<Unread>> {
    use http_body::Body as _;
    let small = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|len| len <= BUFFER_RESPONSES_UP_TO);
    let (parts, mut body) = response.into_parts();
    if !small {
        return Ok(Response::from_parts(
            parts,
            Body::new(Tracked::new(body, in_flight)),
        ));
    }
    // Usually it came with the head.
    match body.take_whole() {
        Some(whole) => {
            drop(in_flight);
            Ok(Response::from_parts(parts, Body::from(whole)))
        }
        None => Err(Box::new((parts, body, in_flight))),
    }
}

/// A response whose small body has yet to arrive.
type Unread = (http::response::Parts, UpstreamBody, InFlight);

/// Reads a body of known small length that is still arriving; an upstream that stalls it fails
/// the request like any broken body would.
async fn collect_small((parts, body, in_flight): Unread) -> Response {
    match http_body_util::BodyExt::collect(body).await {
        Ok(collected) => {
            drop(in_flight);
            Response::from_parts(parts, Body::from(collected.to_bytes()))
        }
        Err(error) => ProxyError::BrokenResponse(error.to_string()).into_response(),
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
    }
}

pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The upstream agreed to switch protocols (a WebSocket): answer 101 to the client, then copy
/// bytes both ways until either side closes.
fn switch_protocols(
    mut upstream_response: http::Response<UpstreamBody>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    let Some(client_upgrade) = client_upgrade else {
        // A 101 nobody asked for cannot be passed on.
        return ProxyError::Internal("upstream switched protocols unasked".into()).into_response();
    };
    let upstream_upgrade = hyper::upgrade::on(&mut upstream_response);
    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok((client, upstream)) => {
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                {
                    tracing::debug!(%error, "upgraded connection ended with an error");
                }
            }
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
    });
    let (parts, _) = upstream_response.into_parts();
    Response::from_parts(parts, Body::empty())
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
