//! What the gateway answers when it cannot pass a response through, tagged by whose fault it was
//! (as pingora does): the client's (`downstream`), the upstream's, or the gateway's own.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::HeaderValue;

/// Header naming the side at fault, so an error page can be told from an upstream's own.
pub const ERROR_SOURCE: &str = "x-flotilla-error";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    // downstream: the request itself
    #[error("no route for host {host:?} and path {path:?}")]
    NoRoute { host: String, path: String },
    #[error("request has no Host")]
    NoHost,
    /// Missing or wrong credentials; carries the `WWW-Authenticate` challenge.
    #[error("authentication required")]
    Unauthorized(HeaderValue),
    #[error("the client sent nothing for longer than the client body timeout")]
    ClientBodyTimeout,
    #[error("the request body ended early")]
    ClientBodyBroken,
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("too many requests; retry after {0} s")]
    RateLimited(u64),
    // upstream
    #[error("upstream {0:?} has no available server")]
    NoServer(std::sync::Arc<str>),
    #[error("upstream {upstream:?}: {server}: {cause}")]
    Unreachable {
        upstream: std::sync::Arc<str>,
        server: std::sync::Arc<str>,
        cause: String,
    },
    #[error("upstream {upstream:?}: {server} sent no response head within {timeout:?}")]
    Timeout {
        upstream: std::sync::Arc<str>,
        server: std::sync::Arc<str>,
        timeout: Duration,
    },
    #[error("the upstream's response body broke off: {0}")]
    BrokenResponse(String),
    // internal
    #[error("cannot build the upstream request: {0}")]
    Internal(String),
}

impl ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoHost | ProxyError::ClientBodyBroken => StatusCode::BAD_REQUEST,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoServer(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Unreachable { .. } | ProxyError::BrokenResponse(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn source_side(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. }
            | ProxyError::NoHost
            | ProxyError::Unauthorized(_)
            | ProxyError::BodyTooLarge(_)
            | ProxyError::RateLimited(_)
            | ProxyError::ClientBodyTimeout
            | ProxyError::ClientBodyBroken => "downstream",
            ProxyError::NoServer(_)
            | ProxyError::Unreachable { .. }
            | ProxyError::Timeout { .. }
            | ProxyError::BrokenResponse(_) => "upstream",
            ProxyError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let status = self.status();
        let side = self.source_side();
        if status.is_server_error() {
            tracing::warn!(error = %self, side, "request failed");
        } else {
            tracing::debug!(error = %self, side, "request refused");
        }
        let mut response = platform::error_response(status, self.to_string());
        response
            .headers_mut()
            .insert(ERROR_SOURCE, HeaderValue::from_static(side));
        if let ProxyError::Unauthorized(challenge) = &self {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, challenge.clone());
        }
        if let ProxyError::RateLimited(seconds) = &self {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(*seconds));
        }
        if matches!(
            self,
            ProxyError::ClientBodyTimeout | ProxyError::BodyTooLarge(_)
        ) {
            // The rest of the connection's bytes cannot be trusted.
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
