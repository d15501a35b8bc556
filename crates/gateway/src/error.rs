//! What the gateway answers when it cannot pass a response through, tagged by whose fault it was
//! (as pingora does): the client's (`downstream`), the upstream's, or the gateway's own.
//!
//! The answer names the problem in words a client can act on, and nothing of the gateway's
//! insides: no upstream name, server address or system error, which go to the log (with the
//! request id that the answer carries too).

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{self, HeaderValue};

/// Header naming the side at fault, so an error page can be told from an upstream's own.
pub const ERROR_SOURCE: &str = "x-flotilla-error";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    // downstream: the request itself
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("no route for host {host:?} and path {path:?}")]
    NoRoute { host: String, path: String },
    #[error("request has no Host")]
    NoHost,
    /// A `/{service}/` route, and no app of that name in the registry (the name is cut to 64
    /// characters and shown quoted).
    #[error("no service named {0:?} is registered")]
    NoService(String),
    #[error("method not allowed")]
    MethodNotAllowed,
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
    #[error("no server is available")]
    NoServer,
    /// The upstream's `max_requests` is reached.
    #[error("too many requests in flight to this service; try again shortly")]
    Overloaded,
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
    #[error("upstream {0:?} switched protocols though the request did not ask to")]
    UnaskedSwitch(std::sync::Arc<str>),
    // internal
    #[error("cannot build the upstream request: {0}")]
    Internal(String),
}

impl ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::NoHost | ProxyError::ClientBodyBroken => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::NoRoute { .. } | ProxyError::NoService(_) => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoServer | ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Unreachable { .. }
            | ProxyError::BrokenResponse(_)
            | ProxyError::UnaskedSwitch(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn source_side(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::NoRoute { .. }
            | ProxyError::NoService(_)
            | ProxyError::NoHost
            | ProxyError::MethodNotAllowed
            | ProxyError::Unauthorized(_)
            | ProxyError::BodyTooLarge(_)
            | ProxyError::RateLimited(_)
            | ProxyError::ClientBodyTimeout
            | ProxyError::ClientBodyBroken => "downstream",
            ProxyError::NoServer
            | ProxyError::Overloaded
            | ProxyError::Unreachable { .. }
            | ProxyError::Timeout { .. }
            | ProxyError::BrokenResponse(_)
            | ProxyError::UnaskedSwitch(_) => "upstream",
            ProxyError::Internal(_) => "internal",
        }
    }

    /// What the client is told: the client's own mistakes in full, the rest in general terms.
    fn public_message(&self) -> String {
        match self {
            ProxyError::Unreachable { .. }
            | ProxyError::BrokenResponse(_)
            | ProxyError::UnaskedSwitch(_) => "bad gateway".into(),
            ProxyError::Timeout { .. } => "upstream timed out".into(),
            ProxyError::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// The answer, carrying the request's id in its body.
    pub(crate) fn into_response_for(self, request_id: Option<&HeaderValue>) -> Response {
        let status = self.status();
        let side = self.source_side();
        let id = request_id.and_then(|id| id.to_str().ok());
        if status.is_server_error() {
            tracing::warn!(error = %self, side, request_id = id, "request failed");
        } else {
            tracing::debug!(error = %self, side, request_id = id, "request refused");
        }
        let mut body = serde_json::json!({
            "status": status.as_u16(),
            "message": self.public_message(),
        });
        if let Some(id) = id {
            body["request_id"] = id.into();
        }
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body.to_string(),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(ERROR_SOURCE, HeaderValue::from_static(side));
        match &self {
            ProxyError::Unauthorized(challenge) => {
                headers.insert(header::WWW_AUTHENTICATE, challenge.clone());
            }
            ProxyError::RateLimited(seconds) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
            }
            ProxyError::MethodNotAllowed => {
                headers.insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                );
            }
            // The rest of the connection's bytes cannot be trusted.
            ProxyError::ClientBodyTimeout
            | ProxyError::BodyTooLarge(_)
            | ProxyError::ClientBodyBroken => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        self.into_response_for(None)
    }
}
