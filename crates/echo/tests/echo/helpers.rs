//! Starts echo on a free loopback port.

use std::net::SocketAddr;
use std::time::Duration;

use platform::Source;
use tokio::sync::oneshot;

pub(crate) struct TestEcho {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    pub(crate) server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub(crate) async fn spawn_echo(env: &[(&str, &str)]) -> TestEcho {
    let mut pairs = vec![("HOSTNAME", "echo-test")];
    pairs.extend_from_slice(env);
    let config = echo::Config::from_source(&Source::from_pairs(pairs.iter().copied()))
        .expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(echo::run(listener, config, async {
        let _ = rx.await;
    }));
    TestEcho {
        addr,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestEcho {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// Starts a shutdown as SIGTERM would, without waiting for it.
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestEcho {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}
