//! Starts storage services on free loopback ports and talks to them.

use std::net::SocketAddr;
use std::time::Duration;

use platform::Source;
use reqwest::header::HeaderMap;
use tokio::sync::oneshot;

pub(crate) struct TestStorage {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
    /// The local store's directory (when local), kept alive with the service.
    pub(crate) dir: Option<tempfile::TempDir>,
    _shutdown: oneshot::Sender<()>,
}

/// Answer parts the tests look at.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A service on a fresh local directory, with `env` on top.
pub(crate) async fn spawn_local(env: &[(&str, &str)]) -> TestStorage {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("videos");
    let store = store.to_str().unwrap().to_string();
    let mut pairs = vec![("VIDEO_STORE", store.as_str())];
    pairs.extend_from_slice(env);
    let mut storage = spawn(&pairs).await;
    storage.dir = Some(dir);
    storage
}

/// A service with exactly `env`.
pub(crate) async fn spawn(env: &[(&str, &str)]) -> TestStorage {
    let config = video_storage::Config::from_source(&Source::from_pairs(env.iter().copied()))
        .expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(video_storage::run(listener, config, async {
        let _ = rx.await;
    }));
    let storage = TestStorage {
        addr,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        dir: None,
        _shutdown: tx,
    };
    for _ in 0..200 {
        if let Ok(answer) = storage.client.get(storage.url("/ready")).send().await
            && answer.status() == 200
        {
            return storage;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the storage service did not become ready");
}

/// `path` as a query value.
pub(crate) fn query(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl TestStorage {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) fn video_url(&self, path: &str) -> String {
        self.url(&format!("/video?path={}", query(path)))
    }

    /// The local store's directory.
    pub(crate) fn store_dir(&self) -> std::path::PathBuf {
        self.dir
            .as_ref()
            .expect("a local store")
            .path()
            .join("videos")
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        let body = answer.bytes().await.unwrap().to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub(crate) async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.send(self.client.put(self.video_url(path)).body(body))
            .await
    }

    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.client.get(self.video_url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    pub(crate) async fn get_raw(&self, path_and_query: &str) -> Answer {
        self.send(self.client.get(self.url(path_and_query))).await
    }
}

/// Bytes that differ at every offset, so a wrong range shows.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Every file under `dir`, relative, sorted (the store's own view of what is there).
pub(crate) fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}
