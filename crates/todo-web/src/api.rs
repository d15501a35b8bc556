//! The TODO API as the board sees it: every call goes through the platform's protected client
//! (deadline, retries of idempotent calls, circuit breaker, bulkhead), so a dead API costs a
//! page a few milliseconds, not a hanging browser. Columns fall back to their last good copy,
//! marked stale, while the API cannot answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderValue, StatusCode, header};

use platform::{CallError, CallPolicy, CallTarget, Verdict};
use serde::{Deserialize, Serialize};

/// One TODO item as the API returns it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Todo {
    pub(crate) id: i64,
    pub(crate) title: String,
    pub(crate) content: String,
    pub(crate) status: String,
    pub(crate) updated: String,
}

/// The columns, in board order.
pub(crate) const STATUSES: [&str; 3] = ["TODO", "PROGRESS", "DONE"];

/// Items asked for per column.
pub(crate) const COLUMN_LIMIT: usize = 200;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The API refused the input; the message is the API's, naming the field.
    #[error("{message}")]
    Rejected { status: u16, message: String },
    /// No connection could be made: nothing reached the API, so trying again is safe.
    #[error("TODO API unreachable: {0}")]
    Unreachable(String),
    #[error("TODO API unavailable: {0}")]
    Unavailable(String),
    /// The circuit is open (or too many calls wait): refused without calling.
    #[error("TODO API unavailable: {0}")]
    Refused(String),
    /// No answer in time: a write may or may not have been applied.
    #[error("TODO API did not answer in time")]
    TimedOut,
}

/// How an attempt counts for the breaker: the API's own failures do; a 4xx is the user's.
fn judge<T>(result: &Result<T, ApiError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Success,
        Err(ApiError::Rejected { status, .. }) if *status < 500 => Verdict::Success,
        Err(ApiError::Rejected { status, .. }) => Verdict::Failure {
            retry: matches!(status, 502..=504),
        },
        Err(ApiError::Unreachable(_)) => Verdict::Failure { retry: true },
        Err(_) => Verdict::Failure { retry: false },
    }
}

impl From<CallError<ApiError>> for ApiError {
    fn from(error: CallError<ApiError>) -> Self {
        match error {
            CallError::Failed(error) => error,
            CallError::Timeout { .. } => ApiError::TimedOut,
            refused => ApiError::Refused(refused.to_string()),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Api {
    base: Arc<str>,
    client: reqwest::Client,
    target: Arc<CallTarget>,
    columns: Arc<Columns>,
}

/// A column as the board shows it.
pub(crate) struct Listed {
    pub(crate) items: Arc<[Todo]>,
    /// The API has more than it returned.
    pub(crate) more: bool,
    /// Set when the API could not answer and this is the last good copy: its age.
    pub(crate) stale: Option<Duration>,
}

/// A column as the API last sent it, with its tag: asked again with `If-None-Match`, an
/// unchanged column comes back as `304` without a body, and this copy is shown.
#[derive(Clone)]
struct Column {
    etag: Option<HeaderValue>,
    items: Arc<[Todo]>,
    more: bool,
    /// When the API last confirmed it.
    seen: Instant,
}

#[derive(Serialize)]
pub(crate) struct Changes<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<&'a str>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

impl Api {
    /// `policy`: how calls to the API are protected (its `timeout` bounds every call).
    pub(crate) fn new(base: &str, policy: CallPolicy) -> Self {
        Api {
            base: Arc::from(base.trim_end_matches('/')),
            client: reqwest::Client::builder()
                .connect_timeout(policy.timeout)
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .expect("a plain HTTP client builds"),
            target: Arc::new(CallTarget::new("todo-api", policy)),
            columns: Arc::default(),
        }
    }

    pub(crate) fn target(&self) -> &CallTarget {
        &self.target
    }

    /// One column, and whether the API has more than it returned. Conditional: an unchanged
    /// column costs the API no body and the board no parsing. When the API cannot answer, the
    /// last good copy is the fallback, with its age.
    pub(crate) async fn list(
        &self,
        status: &'static str,
        caller: &Caller<'_>,
    ) -> Result<Listed, ApiError> {
        let url = format!("{}/todo?status={status}&limit={COLUMN_LIMIT}", self.base);
        let cached = lock(&self.columns).get(status).cloned();
        let mut request = self.client.get(url);
        if let Some(etag) = cached.as_ref().and_then(|c| c.etag.clone()) {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        let columns = self.columns.clone();
        let fallback = cached.clone();
        let read = move |response: reqwest::Response| {
            let cached = cached.clone();
            let columns = columns.clone();
            async move {
                let more = response.headers().contains_key(header::LINK);
                let etag = response.headers().get(header::ETAG).cloned();
                let items: Arc<[Todo]> = match cached {
                    Some(cached) if response.status() == StatusCode::NOT_MODIFIED => cached.items,
                    _ => response
                        .json::<Vec<Todo>>()
                        .await
                        .map_err(unavailable)?
                        .into(),
                };
                let column = Column {
                    etag,
                    items: items.clone(),
                    more,
                    seen: Instant::now(),
                };
                lock(&columns).insert(status, column);
                Ok(Listed {
                    items,
                    more,
                    stale: None,
                })
            }
        };
        self.call(true, request, caller, read, move |error| match fallback {
            Some(copy) => Ok(Listed {
                items: copy.items,
                more: copy.more,
                stale: Some(copy.seen.elapsed()),
            }),
            None => Err(error),
        })
        .await
    }

    pub(crate) async fn create(
        &self,
        title: &str,
        content: &str,
        caller: &Caller<'_>,
    ) -> Result<Todo, ApiError> {
        let url = format!("{}/todo", self.base);
        let body = serde_json::json!({ "title": title, "content": content });
        self.call(false, self.client.post(url).json(&body), caller, json, Err)
            .await
    }

    pub(crate) async fn update(
        &self,
        id: i64,
        changes: &Changes<'_>,
        caller: &Caller<'_>,
    ) -> Result<Todo, ApiError> {
        let url = format!("{}/todo/{id}", self.base);
        self.call(
            false,
            self.client.patch(url).json(changes),
            caller,
            json,
            Err,
        )
        .await
    }

    pub(crate) async fn delete(&self, id: i64, caller: &Caller<'_>) -> Result<(), ApiError> {
        let url = format!("{}/todo/{id}", self.base);
        self.call(
            true,
            self.client.delete(url),
            caller,
            |_| async { Ok(()) },
            Err,
        )
        .await
    }

    /// Whether the API answers its liveness probe (for `/ready`).
    pub(crate) async fn probe(&self) -> Result<(), ApiError> {
        let url = format!("{}/hc", self.base);
        let caller = Caller::probe();
        self.call(
            true,
            self.client.get(url),
            &caller,
            |_| async { Ok(()) },
            Err,
        )
        .await
    }

    /// One protected call: `read` turns a successful answer into the value; `fallback` may
    /// answer instead when the call fails. `idempotent` calls are retried on a refused
    /// connection or a 502–504.
    async fn call<T, F, Fut>(
        &self,
        idempotent: bool,
        request: reqwest::RequestBuilder,
        caller: &Caller<'_>,
        read: F,
        fallback: impl FnOnce(CallError<ApiError>) -> Result<T, CallError<ApiError>>,
    ) -> Result<T, ApiError>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut request = request.header("x-request-id", caller.request_id);
        // A CLIENT span for the call, child of the page request's span (the current context),
        // carried as W3C and B3; a page request left out by the sampler passes its decision on.
        let span = caller.trace.and_then(|_| {
            // Building a copy of the request is the costly part: not for an unsampled one.
            if !platform::otel::current_sampled() {
                return None;
            }
            let built = request.try_clone()?.build().ok()?;
            platform::otel::ClientSpan::start_current(
                built.method().as_str(),
                || built.url().to_string(),
                "todo-api",
            )
        });
        match (&span, caller.trace) {
            (Some(span), _) => request = request.headers(span.headers()),
            (None, Some(headers)) => {
                request = request.headers(platform::otel::propagation_headers(headers));
            }
            (None, None) => {}
        }
        let span = std::sync::Mutex::new(span);
        let attempt = || async {
            // Bodies here are small JSON documents: a copy per attempt always exists.
            let Some(request) = request.try_clone() else {
                return Err(ApiError::Unavailable(
                    "the request cannot be sent again".into(),
                ));
            };
            let response = request.send().await;
            if let Some(span) = span.lock().unwrap_or_else(|e| e.into_inner()).take() {
                span.finish(response.as_ref().ok().map(|r| r.status().as_u16()));
            }
            let response = response.map_err(unavailable)?;
            let status = response.status();
            // 304: the caller asked conditionally, and its copy is current.
            if status.is_success() || status == StatusCode::NOT_MODIFIED {
                return read(response).await;
            }
            let message = match response.json::<ErrorBody>().await {
                Ok(body) => body.message,
                Err(_) => format!("the API answered {status}"),
            };
            Err(ApiError::Rejected {
                status: status.as_u16(),
                message,
            })
        };
        self.target
            .call_or_else(idempotent, judge, attempt, fallback)
            .await
            .map_err(ApiError::from)
    }
}

type Columns = Mutex<HashMap<&'static str, Column>>;

fn lock(columns: &Columns) -> std::sync::MutexGuard<'_, HashMap<&'static str, Column>> {
    // A panic while holding the lock leaves a map of whole entries: still usable.
    columns.lock().unwrap_or_else(|e| e.into_inner())
}

/// Who a call to the API is made for: the page request's id and its headers, which carry its
/// trace context.
pub(crate) struct Caller<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) trace: Option<&'a http::HeaderMap>,
}

impl Caller<'_> {
    /// The readiness probe: no page request behind it.
    fn probe() -> Caller<'static> {
        Caller {
            request_id: "-",
            trace: None,
        }
    }
}

async fn json(response: reqwest::Response) -> Result<Todo, ApiError> {
    response.json().await.map_err(unavailable)
}

fn unavailable(error: reqwest::Error) -> ApiError {
    if error.is_connect() {
        ApiError::Unreachable("cannot connect".to_string())
    } else if error.is_timeout() {
        ApiError::TimedOut
    } else {
        ApiError::Unavailable(error.to_string())
    }
}
