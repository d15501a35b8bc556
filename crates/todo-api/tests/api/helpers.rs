//! Starts the API on a free loopback port with a database of its own, and talks HTTP to it.
//! The database is an SQLite file or a fresh database on a MariaDB primary with a replica,
//! depending on which suite includes this module (`crate::BACKEND`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use platform::Source;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use todo_api::Config;
use tokio::sync::oneshot;

use crate::cluster::Cluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code, reason = "each suite constructs the one variant it runs on")]
pub(crate) enum Backend {
    Sqlite,
    MariaDb,
}

/// The database an app was started on.
pub(crate) enum TestDb {
    Sqlite(PathBuf),
    MariaDb { primary: String },
}

pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
    pub(crate) db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), todo_api::RunError>>>,
    _dir: Option<tempfile::TempDir>,
}

/// Extra settings on top of "a fresh database".
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) env: Vec<(String, String)>,
    /// SQLite: reuse this database file instead of a fresh one.
    pub(crate) db_path: Option<PathBuf>,
}

impl Options {
    pub(crate) fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    fn has(&self, key: &str) -> bool {
        self.env.iter().any(|(k, _)| k == key)
    }
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub(crate) async fn spawn_with(options: Options) -> TestApp {
    let app = spawn_starting(options).await;
    app.wait_ready().await;
    app
}

/// Starts the API without waiting for it to become ready.
pub(crate) async fn spawn_starting(options: Options) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        // Kept for the whole test process: dropping the guard would stop the output.
        std::mem::forget(platform::init_logging(&platform::LogConfig {
            format: platform::telemetry::LogFormat::Text,
            filter: "debug".into(),
        }));
    }
    let mut env = vec![("FLOTILLA_DRAIN_TIMEOUT".to_string(), "5s".to_string())];
    let (dir, db) = if options.has("TODO_PRIMARY_URL") || options.has("TODO_MASTER_URL") {
        let url = options
            .env
            .iter()
            .find(|(k, _)| k.ends_with("_URL"))
            .unwrap()
            .1
            .clone();
        (None, TestDb::MariaDb { primary: url })
    } else {
        match crate::BACKEND {
            Backend::Sqlite => {
                let (dir, path) = match options.db_path.clone() {
                    Some(path) => (None, path),
                    None => {
                        let dir = tempfile::tempdir().expect("temporary directory");
                        let path = dir.path().join("todo.db");
                        (Some(dir), path)
                    }
                };
                env.push((
                    "TODO_PRIMARY_URL".into(),
                    format!("sqlite://{}", path.display()),
                ));
                env.push(("TODO_DB_TIMEOUT".into(), "300ms".into()));
                (dir, TestDb::Sqlite(path))
            }
            Backend::MariaDb => {
                let cluster = Cluster::shared().await;
                let database = cluster.create_database().await;
                let primary = cluster.url(cluster.primary_port, &database);
                let replicas: Vec<String> = cluster
                    .replica_ports
                    .iter()
                    .map(|p| cluster.url(*p, &database))
                    .collect();
                env.push(("TODO_PRIMARY_URL".into(), primary.clone()));
                env.push(("TODO_REPLICA_URLS".into(), replicas.join(",")));
                (None, TestDb::MariaDb { primary })
            }
        }
    };
    env.extend(options.env);
    let config = Config::from_source(&Source::from_pairs(env)).expect("valid test config");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(todo_api::run(listener, config, async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        db,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}

impl TestApp {
    /// The SQLite file (tests about SQLite only).
    #[allow(dead_code, reason = "used by the SQLite suite only")]
    pub(crate) fn db_path(&self) -> &PathBuf {
        match &self.db {
            TestDb::Sqlite(path) => path,
            TestDb::MariaDb { .. } => panic!("not an SQLite app"),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Polls `/ready` until it answers 200 (the store opens before serving starts).
    pub(crate) async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(response) = self.client.get(self.url("/ready")).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the API did not become ready");
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub(crate) async fn put_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PUT")
    }

    pub(crate) async fn patch_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .patch(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PATCH")
    }

    pub(crate) async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE")
    }

    /// A request with an arbitrary method, content type and body.
    pub(crate) async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.expect("request")
    }

    /// Creates an item and returns it.
    pub(crate) async fn create(&self, title: &str, content: &str) -> Value {
        let response = self
            .post_json(
                "/todo",
                &serde_json::json!({"title": title, "content": content}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// Moves an item to `status` and returns it.
    pub(crate) async fn set_status(&self, id: i64, status: &str) -> Value {
        let response = self
            .patch_json(
                &format!("/todo/{id}"),
                &serde_json::json!({"status": status}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Every item of a column, following `Link` headers.
    pub(crate) async fn list_all(&self, status: &str, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut url = format!("/todo?status={status}&limit={limit}");
        loop {
            let response = self.get(&url).await;
            assert_eq!(response.status(), StatusCode::OK);
            let next = next_link(&response);
            let page: Vec<Value> = response.json().await.unwrap();
            assert!(page.len() <= limit as usize);
            items.extend(page);
            match next {
                Some(query) => url = format!("/todo{query}"),
                None => return items,
            }
        }
    }

    /// How many rows the table holds, read straight from the database (the primary).
    pub(crate) async fn row_count(&self) -> i64 {
        match &self.db {
            TestDb::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.query_row("SELECT COUNT(*) FROM todo", [], |row| row.get(0))
                    .unwrap()
            }
            TestDb::MariaDb { primary } => {
                let pool = sqlx::MySqlPool::connect(primary).await.unwrap();
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM todo")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                count
            }
        }
    }

    /// Stops the server as SIGTERM would and waits for it to finish draining.
    pub(crate) async fn shut_down(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The query-only reference in a `Link: <?...>; rel="next"` header.
pub(crate) fn next_link(response: &Response) -> Option<String> {
    let link = response.headers().get("link")?.to_str().ok()?;
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let target = link.strip_prefix('<')?.split('>').next()?;
    assert!(target.starts_with('?'), "a query-only reference: {target}");
    Some(target.to_string())
}

/// Asserts the JSON error body: `{"status": <code>, "message": "..."}` with the message containing `needle`.
pub(crate) async fn assert_error(response: Response, status: u16, needle: &str) -> String {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["status"], status, "{body}");
    let message = body["message"].as_str().expect("a message").to_string();
    assert!(
        message.contains(needle),
        "message {message:?} should mention {needle:?}"
    );
    message
}
