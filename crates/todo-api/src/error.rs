//! The API's one error type, and the extractors that turn bad requests into it.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::model::Invalid;
use crate::store::StoreError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// The original API's wording.
    #[error("id={0} is not found")]
    NotFound(i64),
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    #[error("the API is starting up; try again shortly")]
    Starting,
    #[error("{0}")]
    BadPosition(#[from] crate::store::BadPosition),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::BadRequest(invalid.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) | ApiError::BadPosition(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Starting => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(error) if error.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match status {
            StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %error_chain(&self), "request failed")
            }
            StatusCode::SERVICE_UNAVAILABLE if !matches!(self, ApiError::Starting) => {
                tracing::warn!(error = %error_chain(&self), "request refused: database unavailable");
            }
            _ => {}
        }
        let message = match &self {
            // The cause stays in the log; the client learns only that it is not its fault.
            ApiError::Store(StoreError::Other(_)) => "internal error".to_string(),
            ApiError::Store(StoreError::NoNode(message)) => message.clone(),
            other => other.to_string(),
        };
        platform::error_response(status, message)
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A JSON request body, rejected with the API's errors: 415 for a wrong Content-Type, 413 when
/// too large, 400 naming the field for anything malformed.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let cause = || {
        std::error::Error::source(&rejection)
            .map(ToString::to_string)
            .unwrap_or_else(|| rejection.body_text())
    };
    match &rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::BadRequest(format!("malformed JSON: {}", cause()))
        }
        JsonRejection::JsonDataError(_) => {
            ApiError::BadRequest(format!("invalid body: {}", cause()))
        }
        JsonRejection::BytesRejection(bytes) if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge
        }
        _ => ApiError::BadRequest(rejection.body_text()),
    }
}

/// The `{id}` of `/todo/{id}`: a positive integer.
pub struct TodoId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for TodoId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e: PathRejection| ApiError::BadRequest(e.body_text()))?;
        match raw.0.parse::<i64>() {
            Ok(id) if id > 0 => Ok(TodoId(id)),
            _ => Err(ApiError::BadRequest(format!(
                "id must be a positive integer, got {:?}",
                raw.0
            ))),
        }
    }
}

/// Query parameters, rejected with a 400 that says what was wrong.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e: QueryRejection| {
                let cause = std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text());
                ApiError::BadRequest(format!("invalid query string: {cause}"))
            })
    }
}
