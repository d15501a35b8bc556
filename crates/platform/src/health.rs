//! Liveness (`GET /hc`) and readiness (`GET /ready`).
//!
//! Liveness only says the process answers. Readiness says whether it should get traffic: it is
//! 503 while the service starts and while it drains on shutdown, and otherwise runs the service's
//! dependency checks (the database, an upstream API). A check marked `critical: false` is
//! reported but does not make the service unready (a replica the API can do without).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// The paths of health checks and metric scrapes: logged at debug level, and never traced.
pub(crate) const PROBES: &[&str] = &["/hc", "/ready", "/metrics", "/healthcheck"];

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Where the service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting = 0,
    Serving = 1,
    Draining = 2,
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;
type CheckFn = dyn Fn() -> CheckFuture + Send + Sync;

struct Check {
    name: String,
    critical: bool,
    run: Box<CheckFn>,
}

/// Shared readiness state of one service. Cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    phase: AtomicU8,
    checks: std::sync::RwLock<Vec<Arc<Check>>>,
}

/// How long one dependency check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    pub fn new() -> Self {
        Readiness {
            inner: Arc::new(Inner {
                phase: AtomicU8::new(Phase::Starting as u8),
                checks: std::sync::RwLock::new(Vec::new()),
            }),
        }
    }

    pub fn phase(&self) -> Phase {
        match self.inner.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Draining,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.inner.phase.store(phase as u8, Ordering::Release);
    }

    /// Marks startup as done, unless shutdown has begun meanwhile (a draining service must not
    /// turn ready again).
    pub fn started(&self) {
        let _ = self.inner.phase.compare_exchange(
            Phase::Starting as u8,
            Phase::Serving as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Adds a dependency check. It returns details to show (`Ok`) or what is wrong (`Err`).
    pub fn add_check<F, Fut>(&self, name: impl Into<String>, critical: bool, run: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        let check = Check {
            name: name.into(),
            critical,
            run: Box::new(move || Box::pin(run())),
        };
        self.inner
            .checks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(check));
    }

    /// Runs every check concurrently; the service is ready when it is serving and no critical
    /// check failed.
    pub async fn report(&self) -> (bool, Value) {
        let phase = self.phase();
        let checks: Vec<Arc<Check>> = self
            .inner
            .checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let runs = checks.iter().map(|check| {
            let fut = (check.run)();
            async move { tokio::time::timeout(CHECK_TIMEOUT, fut).await }
        });
        let results = futures_util::future::join_all(runs).await;

        let mut ready = phase == Phase::Serving;
        let mut details = Map::new();
        for (check, result) in checks.iter().zip(results) {
            let result =
                result.unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
            let entry = match result {
                Ok(detail) => json!({"status": "up", "critical": check.critical, "detail": detail}),
                Err(error) => {
                    ready &= !check.critical;
                    json!({"status": "down", "critical": check.critical, "error": error})
                }
            };
            details.insert(check.name.clone(), entry);
        }
        let status = match (phase, ready) {
            (Phase::Starting, _) => "starting",
            (Phase::Draining, _) => "draining",
            (Phase::Serving, true) => "ready",
            (Phase::Serving, false) => "unavailable",
        };
        (ready, json!({"status": status, "checks": details}))
    }
}

/// `GET /hc`: the process is alive.
#[utoipa::path(method(get, head, post, put, patch, delete, options), path = "/hc", tag = "contract",
    description = "Liveness. Answers every standard method, as the seeds' API did, except TRACE and CONNECT (405).",
    responses((status = 200, description = "The process is alive", body = String, example = "OK")))]
pub(crate) async fn liveness() -> &'static str {
    "OK"
}

/// `GET /ready`: 200 with the check report when ready, 503 otherwise.
#[utoipa::path(get, path = "/ready", tag = "contract", responses(
    (status = 200, description = "Serving, and every critical dependency answers", body = Object),
    (status = 503, description = "Starting, draining, or a critical dependency is down", body = Object)))]
pub(crate) async fn readiness(
    axum::extract::State(readiness): axum::extract::State<Readiness>,
) -> Response {
    let (ready, body) = readiness.report().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Where `flotilla healthcheck` asks when given no URL: lets one image carry one `HEALTHCHECK`
/// for every service, each container saying where its own service answers.
pub const HEALTHCHECK_URL: crate::Setting = crate::Setting::new(
    "HEALTHCHECK_URL",
    "url",
    "URL",
    "what `flotilla healthcheck` asks when given no URL (e.g. http://127.0.0.1:8080/ready)",
)
.env_only();

/// Asks `url` (plain `http://host:port/path`) once, for container health checks
/// (`flotilla healthcheck`, so images need no curl): the status of a GET answered within
/// `timeout`, or what went wrong. Only 2xx counts as healthy to the caller.
pub async fn probe(url: &str, timeout: Duration) -> Result<StatusCode, String> {
    call(http::Method::GET, url, timeout)
        .await
        .map(|(status, _)| status)
}

/// One plain-HTTP request to `url` with an empty body, for the command-line tools that talk to a
/// running service (`flotilla healthcheck`, `flotilla gateway --reload`): the status and body
/// text of the answer within `timeout`, or what went wrong, worded for a person.
pub async fn call(
    method: http::Method,
    url: &str,
    timeout: Duration,
) -> Result<(StatusCode, String), String> {
    call_with(method, url, &[], timeout).await
}

/// [`call`], with `headers` added to the request.
pub async fn call_with(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(StatusCode, String), String> {
    use http_body_util::BodyExt;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url:?}: only http:// URLs can be checked"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let ask = async {
        let stream = tokio::net::TcpStream::connect((authority.host(), port))
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("{authority}: {e}"))?;
        tokio::spawn(connection);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::USER_AGENT, "flotilla");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, ask)
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer within {timeout:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_and_checks_decide_readiness() {
        let readiness = Readiness::new();
        assert_eq!(readiness.report().await.1["status"], "starting");

        readiness.set_phase(Phase::Serving);
        readiness.add_check("db", true, || async { Ok(json!("ok")) });
        readiness.add_check("replica", false, || async { Err("refused".to_string()) });
        let (ready, body) = readiness.report().await;
        assert!(
            ready,
            "a non-critical failure must not make it unready: {body}"
        );
        assert_eq!(body["checks"]["replica"]["status"], "down");
        assert_eq!(body["checks"]["replica"]["error"], "refused");

        readiness.add_check("api", true, || async { Err("timeout".to_string()) });
        let (ready, body) = readiness.report().await;
        assert!(!ready);
        assert_eq!(body["status"], "unavailable");

        readiness.set_phase(Phase::Draining);
        assert_eq!(readiness.report().await.1["status"], "draining");
        readiness.started();
        assert_eq!(
            readiness.phase(),
            Phase::Draining,
            "startup finishing late must not undo a drain"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_times_out() {
        let readiness = Readiness::new();
        readiness.set_phase(Phase::Serving);
        readiness.add_check("stuck", true, std::future::pending);
        let (ready, body) = readiness.report().await;
        assert!(!ready);
        assert!(
            body["checks"]["stuck"]["error"]
                .as_str()
                .unwrap()
                .contains("no answer")
        );
    }
}
