//! The API's one error type, and the extractors that turn bad requests into it.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::model::{Invalid, MAX_ID};
use crate::store::StoreError;

/// Largest request body accepted: room for any valid item even with every character written as a
/// JSON escape (16,383 characters of content at up to 12 bytes each).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

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
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                    _ => ApiError::BadRequest(rejection.body_text()),
                })?;
        // A struct would also deserialize from an array of its fields in order; bodies are
        // objects only.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                    Err(error) => ApiError::BadRequest(format!("malformed JSON: {error}")),
                    Ok(_) => ApiError::BadRequest("invalid body: expected a JSON object".into()),
                },
            );
        }
        if too_deep(&bytes) {
            return Err(ApiError::BadRequest(format!(
                "malformed JSON: nested deeper than {MAX_DEPTH} levels"
            )));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Deepest nesting of arrays and objects a body may have: serde_json's own limit for what it
/// parses, applied also to the values of fields the API ignores (which it skips unbounded).
const MAX_DEPTH: usize = 128;

/// Whether arrays and objects nest deeper than [`MAX_DEPTH`], brackets inside strings aside. A
/// body that is not JSON at all may pass; the parser refuses it next.
fn too_deep(bytes: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// `application/json` or any `application/*+json`, parameters aside (what `axum::Json` takes).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5
                && subtype.as_bytes()[subtype.len() - 5..].eq_ignore_ascii_case(b"+json"))
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

/// The `{id}` of `/todo/{id}`: a positive 32-bit integer.
pub struct TodoId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for TodoId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e: PathRejection| ApiError::BadRequest(e.body_text()))?;
        // Digits, optionally with a zero fraction: `27.0` is the integer 27 to JSON Schema (and
        // what Python prints for it), so a generated client may send it.
        let whole = match raw.0.split_once('.') {
            Some((whole, fraction))
                if !fraction.is_empty() && fraction.bytes().all(|b| b == b'0') =>
            {
                whole
            }
            Some(_) => "",
            None => raw.0.as_str(),
        };
        let digits = !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit());
        match whole.parse::<i64>() {
            Ok(id) if digits && (1..=MAX_ID).contains(&id) => Ok(TodoId(id)),
            _ => Err(ApiError::BadRequest(format!(
                "id must be a positive integer up to {MAX_ID}, got {:?}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!too_deep(nested(MAX_DEPTH).as_bytes()));
        assert!(too_deep(nested(MAX_DEPTH + 1).as_bytes()));
        let in_string = format!(r#"{{"a": "{}"}}"#, "[".repeat(1000));
        assert!(!too_deep(in_string.as_bytes()));
        let escaped_quote = format!(r#"{{"a": "\"{}"}}"#, "[".repeat(1000));
        assert!(!too_deep(escaped_quote.as_bytes()));
        let after_string = format!(r#"{{"a": "\\", "b": {}}}"#, nested(MAX_DEPTH));
        assert!(too_deep(after_string.as_bytes()));
    }

    #[test]
    fn json_content_types() {
        let with = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(axum::http::header::CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in [
            "text/json",
            "application/jsonx",
            "application/+json",
            "json",
            "",
        ] {
            assert!(!with(bad), "{bad}");
        }
        assert!(!is_json(&axum::http::HeaderMap::new()));
    }
}
