//! A gateway on a free loopback port in front of test backends that report what they received.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use platform::{CommonConfig, Readiness, ServeOptions, Source};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A backend that answers with what it received, on demand slowly, with a given status, or with a
/// long streamed body. It counts the requests it got.
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) hits: Arc<AtomicUsize>,
    /// Requests to `/hang` whose handling was dropped (the gateway cancelled them).
    pub(crate) cancelled: Arc<AtomicUsize>,
    name: String,
    fail_with: Option<u16>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

#[derive(Clone)]
struct BackendState {
    name: Arc<str>,
    hits: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
    /// Answer every request with this status instead.
    fail_with: Option<u16>,
}

impl Backend {
    pub(crate) async fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap(), Arc::default(), None).await
    }

    /// A backend that answers every request with `status`.
    pub(crate) async fn failing(name: &str, status: u16) -> Backend {
        Self::start_on(
            name,
            "127.0.0.1:0".parse().unwrap(),
            Arc::default(),
            Some(status),
        )
        .await
    }

    async fn start_on(
        name: &str,
        addr: SocketAddr,
        hits: Arc<AtomicUsize>,
        fail_with: Option<u16>,
    ) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let cancelled = Arc::new(AtomicUsize::new(0));
        let state = BackendState {
            name: Arc::from(name),
            hits: hits.clone(),
            cancelled: Arc::clone(&cancelled),
            fail_with,
        };
        let router = Router::new()
            .route("/status/{code}", any(status))
            .route("/slow/{ms}", get(slow))
            .route("/download/{bytes}", get(download))
            .route("/text/{bytes}", get(text))
            .route("/upgrade", get(upgrade))
            .route("/hang", get(hang))
            .fallback(inspect)
            .with_state(state);
        let (tx, rx) = oneshot::channel::<()>();
        let readiness = Readiness::new();
        readiness.started();
        let options = ServeOptions {
            drain_timeout: Duration::from_secs(5),
            ..ServeOptions::default()
        };
        let task = tokio::spawn(platform::serve(
            listener,
            router,
            options,
            readiness,
            async {
                let _ = rx.await;
            },
        ));
        Backend {
            addr,
            hits,
            cancelled,
            name: name.to_string(),
            fail_with,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Shuts down (drains) and waits until the port is closed.
    pub(crate) async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Starts again on the same port.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        *self = Self::start_on(&self.name, self.addr, self.hits.clone(), self.fail_with).await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn inspect(State(state): State<BackendState>, request: Request) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if let Some(code) = state.fail_with {
        let _ = request.into_body().collect().await;
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, format!("{} fails with {code}", state.name)).into_response();
    }
    let (parts, body) = request.into_parts();
    // Count the body as it streams, without keeping it.
    let mut stream = body.into_data_stream();
    let mut body_len = 0u64;
    let mut digest = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                body_len += chunk.len() as u64;
                digest = chunk.iter().fold(digest, |d, b| {
                    d.wrapping_mul(31).wrapping_add(u64::from(*b))
                });
            }
            Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
        }
    }
    axum::Json(json!({
        "backend": &*state.name,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers_json(&parts.headers),
        "body_len": body_len,
        "digest": digest,
    }))
    .into_response()
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let value = value.to_str().unwrap_or("<binary>").to_string();
        match map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    Value::Object(map)
}

async fn status(State(state): State<BackendState>, Path(code): Path<u16>, body: Body) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let _ = body.collect().await;
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, format!("{} says {code}", state.name)).into_response()
}

async fn slow(State(state): State<BackendState>, Path(ms): Path<u64>) -> String {
    state.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("{} after {ms} ms", state.name)
}

/// `bytes` bytes of a repeating pattern, streamed in 64 KiB chunks without a Content-Length
/// (so chunked).
async fn download(Path(bytes): Path<u64>) -> Response {
    const CHUNK: usize = 64 * 1024;
    let pattern: bytes::Bytes = (0..CHUNK)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let stream = futures_util::stream::unfold(bytes, move |left| {
        let pattern = pattern.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(CHUNK as u64) as usize;
            Some((Ok::<_, std::io::Error>(pattern.slice(..n)), left - n as u64))
        }
    });
    Body::from_stream(stream).into_response()
}

/// `bytes` bytes of text, with a length and an ETag: what compression is for.
async fn text(Path(bytes): Path<usize>) -> Response {
    let line = b"The quick brown fox jumps over the lazy dog; TODO: compress me.\n";
    let body: Vec<u8> = line.iter().copied().cycle().take(bytes).collect();
    (
        [
            (http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (http::header::ETAG, "\"text-v1\""),
        ],
        body,
    )
        .into_response()
}

/// Never answers; counts in `cancelled` when its handling is dropped.
async fn hang(State(state): State<BackendState>) -> String {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let _counted = Counted(state.cancelled);
    std::future::pending::<()>().await;
    unreachable!()
}

/// Switches to a protocol that echoes every byte back, upper-cased.
async fn upgrade(mut request: Request) -> Response {
    let Some(protocol) = request.headers().get("upgrade").cloned() else {
        return (StatusCode::BAD_REQUEST, "upgrade expected").into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        let mut buf = [0u8; 1024];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let upper: Vec<u8> = buf[..n].to_ascii_uppercase();
            if io.write_all(&upper).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", protocol)
        .header("connection", "upgrade")
        .body(Body::empty())
        .unwrap()
}

pub(crate) struct TestGateway {
    pub(crate) addr: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Starts a gateway from TOML routes and upstreams, with a listener and an admin listener on free
/// ports.
pub(crate) async fn spawn_gateway(toml: &str) -> TestGateway {
    spawn_gateway_with("", toml).await
}

/// The same, with extra keys for the listener.
pub(crate) async fn spawn_gateway_with(listener: &str, toml: &str) -> TestGateway {
    spawn_gateway_logging("off", listener, toml).await
}

/// The same, with the access log going to `access_log`.
pub(crate) async fn spawn_gateway_logging(
    access_log: &str,
    listener: &str,
    toml: &str,
) -> TestGateway {
    let text = format!(
        "access_log = {access_log:?}\n[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n{listener}\n{toml}"
    );
    let loaded =
        gateway::load::from_text("test.toml", &text, &Source::default()).expect("valid config");
    let common = CommonConfig::from_source(&Source::default()).unwrap();
    start_gateway(gateway::Config::new(loaded, common)).await
}

/// Starts a gateway from a loaded config (which must have an admin listener).
pub(crate) async fn spawn_gateway_config(loaded: gateway::Loaded) -> TestGateway {
    let common = CommonConfig::from_source(&Source::default()).unwrap();
    start_gateway(gateway::Config::new(loaded, common)).await
}

/// Starts a gateway from a config file, as `flotilla gateway --config` does, so that it can
/// reload it (`POST /reload` on its admin listener).
pub(crate) async fn spawn_gateway_from_file(path: &str) -> TestGateway {
    let source = Source::from_pairs([("GATEWAY_CONFIG", path)]);
    start_gateway(gateway::Config::from_source(&source).expect("valid config")).await
}

pub(crate) async fn start_gateway(config: gateway::Config) -> TestGateway {
    let bound = gateway::bind(&config).await.expect("bind gateway");
    let addr = bound.addresses()[0];
    let admin = bound.admin_address().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async {
        let _ = rx.await;
    }));
    TestGateway {
        addr,
        admin,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        stop: Some(tx),
        task: Some(task),
    }
}

impl TestGateway {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET through the gateway")
    }

    pub(crate) async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// GET `path` on the admin listener, as JSON.
    pub(crate) async fn admin_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .expect("GET on the admin listener");
        assert_eq!(response.status(), 200, "GET {path} on the admin listener");
        response.json().await.unwrap()
    }

    /// Stops and waits for the drain to finish.
    pub(crate) async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// One upstream named `app` with these servers (TOML inline tables) and extra upstream keys.
pub(crate) fn one_upstream(servers: &[String], extra: &str) -> String {
    format!(
        "[[route]]\nupstream = \"app\"\n[upstream.app]\n{extra}\nserver = [{}]\n",
        servers.join(", ")
    )
}

pub(crate) fn server(addr: SocketAddr, params: &str) -> String {
    if params.is_empty() {
        format!("{{ address = \"{addr}\" }}")
    } else {
        format!("{{ address = \"{addr}\", {params} }}")
    }
}

/// An address where nothing listens.
pub(crate) async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Polls `condition` every 20 ms for up to `limit`.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
