//! The JSON error body every JSON API answers with: `{"status": <int>, "message": "<text>"}`, the
//! shape of the seeds' TODO API.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The body of every 4xx and 5xx answer of a JSON API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"status": 400, "message": "title must not be empty"}))]
pub struct ErrorBody {
    /// The HTTP status code, repeated for clients that only see the body.
    pub status: u16,
    /// What went wrong, naming the field or resource concerned.
    pub message: String,
}

/// A complete error response.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        status: status.as_u16(),
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

/// Gives a JSON body to the bodiless errors the router produces itself (unknown path, method not
/// allowed), keeping their headers, so a JSON API never answers an error without one.
pub(crate) async fn json_error_bodies(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => format!("no resource at {}", uri.path()),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = response
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!(
                "{method} is not allowed on {}; allowed: {allowed}",
                uri.path()
            )
        }
        other => other.canonical_reason().unwrap_or("error").to_string(),
    };
    let (mut parts, _) = response.into_parts();
    let fresh = error_response(status, message);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, fresh.into_body())
}
