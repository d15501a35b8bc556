//! Starts registries (and registered services) on free loopback ports.

use std::net::SocketAddr;
use std::time::Duration;

use platform::Source;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub(crate) struct TestRegistry {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), registry::RegistryError>>>,
}

/// A registry with `env` on a free port; evictions checked every 100 ms.
pub(crate) async fn spawn_registry(env: &[(&str, &str)]) -> TestRegistry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn_on(listener, env).await
}

pub(crate) async fn spawn_on(
    listener: tokio::net::TcpListener,
    env: &[(&str, &str)],
) -> TestRegistry {
    let mut pairs = vec![("REGISTRY_EVICTION_INTERVAL", "100ms")];
    pairs.extend_from_slice(env);
    let config = registry::Config::from_source(&Source::from_pairs(pairs.iter().copied()))
        .expect("valid config");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(registry::run(listener, config, async {
        let _ = rx.await;
    }));
    let registry = TestRegistry {
        addr,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()
            .unwrap(),
        shutdown: Some(tx),
        server: Some(server),
    };
    registry
        .wait_until(|| async { registry.get("/ready").await.status() == 200 })
        .await;
    registry
}

/// An instance document as Spring Cloud sends it.
pub(crate) fn instance(app: &str, id: &str, port: u16) -> Value {
    json!({"instance": {
        "instanceId": id, "hostName": "127.0.0.1", "app": app.to_uppercase(), "ipAddr": "127.0.0.1",
        "status": "UP", "port": {"$": port, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 1, "durationInSecs": 2},
        "vipAddress": app.to_lowercase(),
    }})
}

impl TestRegistry {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) fn eureka_url(&self) -> String {
        self.url("/eureka/")
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub(crate) async fn get_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    pub(crate) async fn send(&self, method: reqwest::Method, path: &str) -> reqwest::StatusCode {
        self.client
            .request(method, self.url(path))
            .send()
            .await
            .expect("request")
            .status()
    }

    pub(crate) async fn register(&self, document: &Value) -> reqwest::Response {
        let app = document["instance"]["app"].as_str().unwrap();
        self.client
            .post(self.url(&format!("/eureka/apps/{app}")))
            .json(document)
            .send()
            .await
            .expect("POST")
    }

    /// The ids registered under `app` (upper case), sorted.
    pub(crate) async fn ids(&self, app: &str) -> Vec<String> {
        let all = self.get_json("/eureka/apps").await;
        let mut ids: Vec<String> = all["applications"]["application"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["name"] == app)
            .flat_map(|a| a["instance"].as_array().unwrap().clone())
            .map(|i| i["instanceId"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    pub(crate) async fn version(&self) -> u64 {
        let all = self.get_json("/eureka/apps").await;
        all["applications"]["versions__delta"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Polls `condition` every 50 ms, for at most 15 s.
    pub(crate) async fn wait_until<F, Fut>(&self, condition: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        wait_until(condition).await
    }

    /// Stops the registry as SIGTERM would, and waits until it has.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Polls `condition` every 50 ms, for at most 15 s; fails the test if it never holds.
pub(crate) async fn wait_until<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the condition did not hold within 15 s");
}
