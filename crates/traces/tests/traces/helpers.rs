//! Starts collectors on free loopback ports and talks to them.

use std::net::SocketAddr;
use std::time::Duration;

use platform::Source;
use serde_json::Value;
use tokio::sync::oneshot;

pub(crate) struct TestCollector {
    pub(crate) addr: SocketAddr,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), traces::TracesError>>>,
}

/// A collector with `env` (in memory unless `TRACES_DATA` is given) on a free port.
pub(crate) async fn spawn_collector(env: &[(&str, &str)]) -> TestCollector {
    let mut pairs = vec![("TRACES_DATA", ":memory:")];
    pairs.extend_from_slice(env);
    let config = traces::Config::from_source(&Source::from_pairs(pairs.iter().copied()))
        .expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(traces::run(listener, config, async {
        let _ = rx.await;
    }));
    let collector = TestCollector {
        addr,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        shutdown: Some(tx),
        server: Some(server),
    };
    for _ in 0..200 {
        if collector.get("/ready").await.0 == 200 {
            return collector;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the collector did not become ready");
}

impl TestCollector {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Status and body text.
    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let answer = self.client.get(self.url(path)).send().await.unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    }

    pub(crate) async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Posts spans as JSON; status and body text.
    pub(crate) async fn post_spans(&self, body: impl Into<reqwest::Body>) -> (u16, String) {
        self.post(
            "/api/v2/spans",
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let mut request = self.client.post(self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let answer = request.send().await.unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    }

    /// Stops it as SIGTERM would, and waits until it has.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

/// Now, in microseconds since the epoch.
pub(crate) fn now_us() -> u64 {
    traces::routes::now_micros()
}
