//! The request path as steps, one concern each, composed statically (no boxing, no dynamic
//! dispatch): each step either answers the request or hands it to the next one.
//!
//! ```text
//! AccessLog          one JSON line per request; the gateway's own errors become answers here
//!  └ Routing         the target checked and normalised (`target`), the route found (or 301/404)
//!     └ Checks       a route that an encoded slash would change, TRACE where not allowed: refused
//!        └ RateLimit the route's rate per client address (429); before authentication, so that
//!           │          guessing passwords is limited too and costs no bcrypt past the limit
//!           └ Authenticate   the route's users (401)
//!              └ Compress    negotiates before, compresses the answer after
//!                 └ Dispatch the route's files, or its upstream (`forward`)
//! ```
//!
//! Steps before `Routing` see a request ([`Step`]); steps after it also see its route and
//! normalised target ([`RouteStep`]), so none of them can run on a request that has no route.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use platform::observe::RouteLabel;

use super::{Proxy, Upstreamed, forward, log_entry};
use crate::access_log::Logged;
use crate::compress::{self, Encoding};
use crate::error::ProxyError;
use crate::routing::{Lookup, Route};
use crate::server::zero_copy::ZeroCopy;
use crate::target::Target;

/// What the steps of one request share.
pub(crate) struct Exchange {
    pub(crate) proxy: Proxy,
    pub(crate) started: Instant,
    /// The route the request took, for its metrics; `unmatched` until routing finds one.
    pub(crate) label: RouteLabel,
    /// Which server answered and how fast, for the access log.
    pub(crate) upstreamed: Upstreamed,
}

/// A request with its route and normalised target.
pub(crate) struct Routed {
    /// Where the route is in the connection's table ([`Routed::route`]).
    pub(crate) route: usize,
    pub(crate) target: Target,
    /// The encoding the answer will be compressed with (set by [`Compress`]).
    pub(crate) encoding: Option<Encoding>,
}

impl Routed {
    /// The request's route.
    pub(crate) fn route<'t>(&self, exchange: &'t Exchange) -> &'t Route {
        exchange.proxy.0.routes.route(self.route)
    }
}

/// A step before routing.
pub(crate) trait Step: Sync {
    fn run<'a>(
        &'a self,
        exchange: &'a mut Exchange,
        request: Request,
    ) -> impl Future<Output = Result<Response, ProxyError>> + Send + 'a;
}

/// A step after routing.
pub(crate) trait RouteStep: Sync {
    fn run<'a>(
        &'a self,
        exchange: &'a mut Exchange,
        routed: &'a mut Routed,
        request: Request,
    ) -> impl Future<Output = Result<Response, ProxyError>> + Send + 'a;
}

/// The steps after routing.
type AfterRouting = Checks<RateLimit<Authenticate<Compress<Dispatch>>>>;

/// The gateway's request path.
pub(crate) const PATH: AccessLog<Routing<AfterRouting>> =
    AccessLog(Routing(Checks(RateLimit(Authenticate(Compress(Dispatch))))));

/// One access log line per request, when the listener logs; the gateway's own refusals and
/// failures become answers here, so the log line has their status.
pub(crate) struct AccessLog<N>(pub(crate) N);

impl<N: Step> Step for AccessLog<N> {
    async fn run(&self, exchange: &mut Exchange, request: Request) -> Result<Response, ProxyError> {
        let request_id = request
            .headers()
            .get(platform::observe::REQUEST_ID)
            .cloned();
        let entry = exchange
            .proxy
            .0
            .listener
            .access_log
            .enabled()
            .then(|| log_entry::entry_for(&request, exchange.started));
        let outcome = self.0.run(exchange, request).await;
        let mut response =
            outcome.unwrap_or_else(|error| error.into_response_for(request_id.as_ref()));
        if let Some(mut entry) = entry {
            entry.route = exchange.label.name;
            entry.status = response.status().as_u16();
            entry.head_bytes = log_entry::head_bytes(&response);
            entry.upstream_addr = exchange.upstreamed.server.take();
            entry.upstream_response_time = exchange.upstreamed.head_time;
            let log = exchange.proxy.clone();
            response = response.map(|body| Body::new(Logged::new(body, entry, log)));
            exchange.label.access_logged = true;
        }
        Ok(response)
    }
}

/// Checks and normalises the target, and finds its route.
pub(crate) struct Routing<N>(pub(crate) N);

impl<N: RouteStep> Step for Routing<N> {
    async fn run(&self, exchange: &mut Exchange, request: Request) -> Result<Response, ProxyError> {
        if request.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        let target = Target::of(&request).map_err(|refused| ProxyError::BadRequest(refused.0))?;
        let routes = &exchange.proxy.0.routes;
        match routes.lookup(target.host_name(), target.path()) {
            Lookup::Route(route) => {
                exchange.label = route.label;
                let mut routed = Routed {
                    route: route.index,
                    target,
                    encoding: None,
                };
                self.0.run(exchange, &mut routed, request).await
            }
            Lookup::Redirect => Ok(with_slash(&target)),
            Lookup::None => Err(ProxyError::NoRoute {
                host: target.host_name().unwrap_or("").to_string(),
                path: target.path().to_string(),
            }),
        }
    }
}

/// 301 to the target's path with a slash added (its query kept), as nginx answers a request for
/// `/x` that only a location `/x/` would take.
fn with_slash(target: &Target) -> Response {
    let location = match target.query() {
        Some(query) => format!("{}/?{query}", target.path()),
        None => format!("{}/", target.path()),
    };
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Refuses a request that an encoded slash would send elsewhere, and TRACE where the route does
/// not allow it.
pub(crate) struct Checks<N>(pub(crate) N);

impl<N: RouteStep> RouteStep for Checks<N> {
    async fn run(
        &self,
        exchange: &mut Exchange,
        routed: &mut Routed,
        request: Request,
    ) -> Result<Response, ProxyError> {
        // A server that decodes %2F may see other segments than the gateway routed on: the
        // request must lead to the same route either way.
        if let Some(decoded) = &routed.target.slashes_decoded {
            let routes = &exchange.proxy.0.routes;
            let same_route = decoded.as_ref().is_ok_and(|path| {
                routes
                    .find(routed.target.host_name(), path)
                    .map(|r| r.index)
                    == Some(routed.route)
            });
            if !same_route {
                return Err(ProxyError::BadRequest(
                    "an encoded slash in the path makes it ambiguous",
                ));
            }
        }
        if request.method() == Method::TRACE && !routed.route(exchange).allow_trace {
            return Err(ProxyError::MethodNotAllowed);
        }
        self.0.run(exchange, routed, request).await
    }
}

/// The route's rate limit per client address (the connection's peer).
pub(crate) struct RateLimit<N>(pub(crate) N);

impl<N: RouteStep> RouteStep for RateLimit<N> {
    async fn run(
        &self,
        exchange: &mut Exchange,
        routed: &mut Routed,
        request: Request,
    ) -> Result<Response, ProxyError> {
        if let Some(limiter) = &routed.route(exchange).rate_limit {
            let client = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip());
            limiter.check(client).map_err(ProxyError::RateLimited)?;
        }
        self.0.run(exchange, routed, request).await
    }
}

/// The route's users, by basic authentication.
pub(crate) struct Authenticate<N>(pub(crate) N);

impl<N: RouteStep> RouteStep for Authenticate<N> {
    async fn run(
        &self,
        exchange: &mut Exchange,
        routed: &mut Routed,
        request: Request,
    ) -> Result<Response, ProxyError> {
        if let Some((users, challenge)) = &routed.route(exchange).auth
            && !users.allows(request.headers()).await
        {
            return Err(ProxyError::Unauthorized(challenge.clone()));
        }
        self.0.run(exchange, routed, request).await
    }
}

/// Compresses the answer on a route that asks for it, as the client accepts.
pub(crate) struct Compress<N>(pub(crate) N);

impl<N: RouteStep> RouteStep for Compress<N> {
    async fn run(
        &self,
        exchange: &mut Exchange,
        routed: &mut Routed,
        request: Request,
    ) -> Result<Response, ProxyError> {
        if !routed.route(exchange).compress {
            return self.0.run(exchange, routed, request).await;
        }
        routed.encoding = compress::negotiate(request.method(), request.headers());
        let encoding = routed.encoding;
        let response = self.0.run(exchange, routed, request).await?;
        Ok(compress::apply(response, encoding))
    }
}

/// The route's files, or its upstream.
pub(crate) struct Dispatch;

impl RouteStep for Dispatch {
    async fn run(
        &self,
        exchange: &mut Exchange,
        routed: &mut Routed,
        request: Request,
    ) -> Result<Response, ProxyError> {
        let route = routed.route(exchange);
        if route.services {
            let rest = route.rest_of(routed.target.path());
            let name: String = rest
                .split('/')
                .next()
                .unwrap_or("")
                .chars()
                .take(64)
                .collect();
            return Err(ProxyError::NoService(name));
        }
        let Some(files) = &route.files else {
            return forward(exchange, routed, request).await;
        };
        let rest = route.rest_of(routed.target.path());
        let served = files.serve(request.method(), rest, request.headers()).await;
        // Zero copy only for a body that reaches the client as it is.
        let (status, headers) = served.head();
        let compressed = route.compress && compress::compresses(routed.encoding, status, headers);
        let zero_copy = ZeroCopy::of(&request).filter(|_| !compressed);
        Ok(served.into_response(zero_copy))
    }
}
