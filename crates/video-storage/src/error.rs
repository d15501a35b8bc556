//! The service's one error type: each variant is a status and a message for the client; the
//! store's own errors are logged here and never shown (they name hosts and paths).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::key::BadPath;
use crate::store::Outside;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    BadPath(#[from] BadPath),
    #[error(transparent)]
    Outside(#[from] Outside),
    #[error("{0}")]
    BadRequest(String),
    #[error("no object at this path")]
    NotFound,
    #[error("the object does not match the request's preconditions")]
    PreconditionFailed,
    #[error("uploads are limited to {0} bytes")]
    TooLarge(u64),
    #[error("the object kept changing while it was read; try again")]
    Busy,
    #[error("the storage backend is unavailable")]
    Unavailable(#[source] object_store::Error),
}

impl From<object_store::Error> for StorageError {
    fn from(error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => StorageError::NotFound,
            object_store::Error::Precondition { .. } => StorageError::PreconditionFailed,
            other => StorageError::Unavailable(other),
        }
    }
}

impl IntoResponse for StorageError {
    fn into_response(self) -> Response {
        let status = match &self {
            StorageError::BadPath(_) | StorageError::Outside(_) | StorageError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            StorageError::NotFound => StatusCode::NOT_FOUND,
            StorageError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            StorageError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            StorageError::Busy | StorageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if let StorageError::Unavailable(cause) = &self {
            tracing::error!(error = %cause, "the storage backend failed");
        }
        platform::error_response(status, self.to_string())
    }
}
