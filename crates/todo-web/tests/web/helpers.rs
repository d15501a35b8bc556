//! A TODO API and a board on free loopback ports.

use std::net::SocketAddr;
use std::time::Duration;

use platform::Source;
use serde_json::Value;
use tokio::sync::oneshot;

/// A running service that stops when dropped (or on `stop`).
pub(crate) struct Service {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Service {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The TODO API on an SQLite file in `dir`, optionally with the original sample rows.
pub(crate) async fn spawn_api(dir: &std::path::Path, seed: bool) -> Service {
    let db = format!("sqlite://{}", dir.join("todo.db").display());
    let mut pairs = vec![("TODO_PRIMARY_URL", db.as_str())];
    if seed {
        pairs.push(("TODO_SEED", "1"));
    }
    let config = todo_api::Config::from_source(&Source::from_pairs(pairs)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = todo_api::run(listener, config, async {
            let _ = rx.await;
        })
        .await;
    });
    let service = Service {
        addr,
        stop: Some(tx),
        task: Some(task),
    };
    for _ in 0..200 {
        if reqwest::get(service.url("/ready"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return service;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the API did not become ready");
}

/// The board in front of `api_url`.
pub(crate) async fn spawn_web(api_url: &str) -> Service {
    let config = todo_web::Config::from_source(&Source::from_pairs([
        ("TODO_API_URL", api_url),
        ("TODO_API_TIMEOUT", "1s"),
    ]))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = todo_web::run(listener, config, async {
            let _ = rx.await;
        })
        .await;
    });
    Service {
        addr,
        stop: Some(tx),
        task: Some(task),
    }
}

/// A client that does not follow redirects, so tests see the 303s.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The items of one column, from the API.
pub(crate) async fn api_column(api: &Service, status: &str) -> Vec<Value> {
    reqwest::get(api.url(&format!("/todo?status={status}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(crate) async fn api_find(api: &Service, title: &str) -> Option<Value> {
    for status in ["TODO", "PROGRESS", "DONE"] {
        if let Some(item) = api_column(api, status)
            .await
            .into_iter()
            .find(|i| i["title"] == title)
        {
            return Some(item);
        }
    }
    None
}
