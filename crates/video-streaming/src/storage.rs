//! Calls to video-storage, through the platform's protected client: when storage is down the
//! first few calls fail (connect within 2 s, an answer's head within the policy's timeout,
//! 10 s by default; reads retried once on a refused connection), then the breaker answers at
//! once (503) until storage is tried again. A stream, once started, has no bound on its length
//! (a film plays as long as it plays) but must bring data every 30 s. An upload has an hour.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use platform::{CallError, CallPolicy, CallTarget, Verdict};

/// The request headers a read passes on: ranges and conditions.
pub(crate) const READ_HEADERS: &[&str] = &[
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
];

/// The answer headers passed back to the viewer.
pub(crate) const ANSWER_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
];

/// The default bound on a call's answer head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound on an upload, body included.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("video storage is unavailable")]
    Unavailable,
    /// No connection: nothing reached storage, so a read may go again.
    #[error("video storage is unavailable")]
    Unreachable,
    #[error("video storage refused: {message}")]
    Refused { status: u16, message: String },
}

fn judge(result: &Result<reqwest::Response, StorageError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Success,
        Err(StorageError::Refused { status, .. }) if *status < 500 => Verdict::Success,
        Err(StorageError::Refused { status, .. }) => Verdict::Failure {
            retry: matches!(status, 502..=504),
        },
        Err(StorageError::Unreachable) => Verdict::Failure { retry: true },
        Err(StorageError::Unavailable) => Verdict::Failure { retry: false },
    }
}

/// What storage says about a stored object.
#[derive(Debug, serde::Deserialize)]
pub struct Stored {
    pub path: String,
    pub size: u64,
    pub content_type: String,
}

#[derive(Debug, Clone)]
pub struct StorageClient {
    base: String,
    http: reqwest::Client,
    target: Arc<CallTarget>,
}

fn query(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl StorageClient {
    /// `base`: `http://host:port`, without a trailing slash.
    pub fn new(base: &str, policy: CallPolicy) -> StorageClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(Duration::from_secs(30))
            .build()
            .expect("a plain HTTP client builds");
        StorageClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            target: Arc::new(CallTarget::new("video-storage", policy)),
        }
    }

    /// The URL of an object (for ffprobe, which reads it with ranges itself).
    pub fn object_url(&self, path: &str) -> String {
        format!("{}/video?path={}", self.base, query(path))
    }

    /// One protected call. A request with a streamed body cannot be sent twice: it is sent
    /// once, not `idempotent`; `timeout` replaces the policy's for it.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        idempotent: bool,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, StorageError> {
        let mut once = Some(request);
        let attempt = || {
            let request = match &once {
                Some(request) if idempotent => request.try_clone(),
                _ => None,
            }
            .or_else(|| once.take());
            async move {
                let request = request.ok_or(StorageError::Unavailable)?;
                let answer = request.send().await.map_err(|error| {
                    if error.is_connect() {
                        StorageError::Unreachable
                    } else {
                        StorageError::Unavailable
                    }
                })?;
                let status = answer.status();
                if status.is_server_error() {
                    return Err(StorageError::Refused {
                        status: status.as_u16(),
                        message: "video storage failed".into(),
                    });
                }
                Ok(answer)
            }
        };
        let timeout = timeout.unwrap_or(self.target.policy().timeout);
        match self
            .target
            .call_within(timeout, idempotent, judge, attempt)
            .await
        {
            Ok(answer) => Ok(answer),
            Err(CallError::Failed(StorageError::Unreachable)) => Err(StorageError::Unavailable),
            Err(CallError::Failed(error)) => Err(error),
            Err(_) => Err(StorageError::Unavailable),
        }
    }

    /// A read of `path`, passing on the viewer's range and condition headers; the answer as
    /// storage gave it (200, 206, 304, 404, 416, ...).
    pub async fn read(
        &self,
        path: &str,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<reqwest::Response, StorageError> {
        let url = self.object_url(path);
        let mut request = if head {
            self.http.head(url)
        } else {
            self.http.get(url)
        };
        for name in READ_HEADERS {
            if let Some(value) = headers.get(*name) {
                request = request.header(*name, value);
            }
        }
        self.call(request, true, None).await
    }

    /// Stores `body` at `path`.
    pub async fn put(&self, path: &str, body: reqwest::Body) -> Result<Stored, StorageError> {
        let answer = self
            .call(
                self.http.put(self.object_url(path)).body(body),
                false,
                Some(UPLOAD_TIMEOUT),
            )
            .await?;
        let status = answer.status();
        if status == StatusCode::CREATED || status == StatusCode::OK {
            return answer.json().await.map_err(|_| StorageError::Unavailable);
        }
        Err(refused(answer).await)
    }

    /// Deletes `path`; a missing object is fine.
    pub async fn delete(&self, path: &str) -> Result<(), StorageError> {
        let answer = self
            .call(self.http.delete(self.object_url(path)), true, None)
            .await?;
        match answer.status() {
            StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(refused(answer).await),
        }
    }
}

async fn refused(answer: reqwest::Response) -> StorageError {
    let status = answer.status().as_u16();
    let message = answer
        .json::<platform::ErrorBody>()
        .await
        .map(|body| body.message)
        .unwrap_or_else(|_| format!("answered {status}"));
    StorageError::Refused { status, message }
}
