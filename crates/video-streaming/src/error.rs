//! The service's one error type: a status and a message for the client; causes are logged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::catalog::CatalogError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no video with id {0}")]
    NotFound(String),
    #[error("uploads are limited to {0} bytes")]
    TooLarge(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the video catalog is unavailable")]
    Catalog(#[from] CatalogError),
}

impl VideoError {
    pub fn status(&self) -> StatusCode {
        match self {
            VideoError::BadRequest(_) => StatusCode::BAD_REQUEST,
            VideoError::NotFound(_) => StatusCode::NOT_FOUND,
            VideoError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            VideoError::Storage(StorageError::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            VideoError::Storage(StorageError::Refused { status, .. }) if *status < 500 => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            VideoError::Storage(_) => StatusCode::BAD_GATEWAY,
            VideoError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for VideoError {
    fn into_response(self) -> Response {
        if let VideoError::Catalog(cause) = &self {
            tracing::error!(error = %cause, "the video catalog failed");
        }
        platform::error_response(self.status(), self.to_string())
    }
}
