//! The TODO API as the board sees it: every call has a timeout and goes through one circuit
//! breaker, so a dead API costs a page a few milliseconds, not a hanging browser.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, StatusCode, header};

use platform::{BreakerSettings, CallError, CircuitBreaker};
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
    #[error("TODO API unavailable: {0}")]
    Unavailable(String),
}

impl ApiError {
    /// Failures of the API itself, which count against the circuit; a 4xx is the user's.
    fn is_failure(&self) -> bool {
        match self {
            ApiError::Rejected { status, .. } => *status >= 500,
            ApiError::Unavailable(_) => true,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Api {
    base: Arc<str>,
    client: reqwest::Client,
    breaker: Arc<CircuitBreaker>,
    columns: Arc<Columns>,
}

/// A column as the API last sent it, with its tag: asked again with `If-None-Match`, an
/// unchanged column comes back as `304` without a body, and this copy is shown.
#[derive(Clone)]
struct Column {
    etag: HeaderValue,
    items: Arc<[Todo]>,
    more: bool,
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
    pub(crate) fn new(base: &str, timeout: Duration) -> Self {
        Api {
            base: Arc::from(base.trim_end_matches('/')),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .expect("a plain HTTP client builds"),
            breaker: Arc::new(CircuitBreaker::new("todo-api", BreakerSettings::default())),
            columns: Arc::default(),
        }
    }

    pub(crate) fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// One column, and whether the API has more than it returned. Conditional: an unchanged
    /// column costs the API no body and the board no parsing.
    pub(crate) async fn list(
        &self,
        status: &'static str,
        caller: &Caller<'_>,
    ) -> Result<(Arc<[Todo]>, bool), ApiError> {
        let url = format!("{}/todo?status={status}&limit={COLUMN_LIMIT}", self.base);
        let cached = lock(&self.columns).get(status).cloned();
        let mut request = self.client.get(url);
        if let Some(cached) = &cached {
            request = request.header(header::IF_NONE_MATCH, cached.etag.clone());
        }
        let columns = self.columns.clone();
        self.call(request, caller, |response| async move {
            if response.status() == StatusCode::NOT_MODIFIED
                && let Some(cached) = cached
            {
                return Ok((cached.items, cached.more));
            }
            let more = response.headers().contains_key(header::LINK);
            let etag = response.headers().get(header::ETAG).cloned();
            let items: Arc<[Todo]> = response
                .json::<Vec<Todo>>()
                .await
                .map_err(unavailable)?
                .into();
            let mut columns = lock(&columns);
            match etag {
                Some(etag) => columns.insert(
                    status,
                    Column {
                        etag,
                        items: items.clone(),
                        more,
                    },
                ),
                None => columns.remove(status),
            };
            Ok((items, more))
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
        self.call(self.client.post(url).json(&body), caller, json)
            .await
    }

    pub(crate) async fn update(
        &self,
        id: i64,
        changes: &Changes<'_>,
        caller: &Caller<'_>,
    ) -> Result<Todo, ApiError> {
        let url = format!("{}/todo/{id}", self.base);
        self.call(self.client.patch(url).json(changes), caller, json)
            .await
    }

    pub(crate) async fn delete(&self, id: i64, caller: &Caller<'_>) -> Result<(), ApiError> {
        let url = format!("{}/todo/{id}", self.base);
        self.call(self.client.delete(url), caller, |_| async { Ok(()) })
            .await
    }

    /// Whether the API answers its liveness probe (for `/ready`).
    pub(crate) async fn probe(&self) -> Result<(), ApiError> {
        let url = format!("{}/hc", self.base);
        self.call(self.client.get(url), &Caller::probe(), |_| async { Ok(()) })
            .await
    }

    async fn call<T, F, Fut>(
        &self,
        request: reqwest::RequestBuilder,
        caller: &Caller<'_>,
        read: F,
    ) -> Result<T, ApiError>
    where
        F: FnOnce(reqwest::Response) -> Fut,
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
        let result = self
            .breaker
            .call(ApiError::is_failure, async {
                let response = request.send().await;
                if let Some(span) = span {
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
            })
            .await;
        match result {
            Ok(value) => Ok(value),
            Err(CallError::Failed(error)) => Err(error),
            Err(open @ CallError::Open(_)) => Err(ApiError::Unavailable(open.to_string())),
        }
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
    let what = if error.is_timeout() {
        "no answer in time".to_string()
    } else if error.is_connect() {
        "cannot connect".to_string()
    } else {
        error.to_string()
    };
    ApiError::Unavailable(what)
}
