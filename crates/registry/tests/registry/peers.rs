//! Three registries replicating to each other: what one learns, the others know; one killed,
//! nothing is lost from the others; one restarted copies them.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{instance, spawn_on, wait_until};

#[tokio::test]
async fn three_peers_replicate_and_lose_nothing_when_one_goes() {
    let listeners: Vec<tokio::net::TcpListener> = futures_util::future::join_all(
        (0..3).map(|_| tokio::net::TcpListener::bind("127.0.0.1:0")),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}/eureka/", l.local_addr().unwrap()))
        .collect();
    let mut registries = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let others: Vec<&str> = (0..3)
            .filter(|i| *i != index)
            .map(|i| urls[i].as_str())
            .collect();
        let peers = others.join(",");
        registries.push(spawn_on(listener, &[("REGISTRY_PEERS", &peers)]).await);
    }
    let mut long_lease = instance("story", "s1", 1);
    long_lease["instance"]["leaseInfo"]["durationInSecs"] = json!(90);
    assert_eq!(registries[0].register(&long_lease).await.status(), 204);
    let mut second = long_lease.clone();
    second["instance"]["instanceId"] = json!("s2");
    assert_eq!(registries[1].register(&second).await.status(), 204);
    for registry in &registries {
        wait_until(|| async { registry.ids("STORY").await == ["s1", "s2"] }).await;
    }
    // A status override made on one reaches the others.
    let path = "/eureka/apps/STORY/s1/status?value=OUT_OF_SERVICE";
    assert_eq!(registries[2].send(Method::PUT, path).await, 200);
    for registry in &registries {
        wait_until(|| async {
            registry.get_json("/eureka/apps/STORY/s1").await["instance"]["status"]
                == "OUT_OF_SERVICE"
        })
        .await;
    }
    // The first one goes: the others keep everything, and still replicate to each other.
    let first = registries.remove(0);
    first.stop().await;
    for registry in &registries {
        assert_eq!(registry.ids("STORY").await, ["s1", "s2"]);
    }
    assert_eq!(
        registries[0]
            .send(Method::DELETE, "/eureka/apps/STORY/s2")
            .await,
        200
    );
    wait_until(|| async { registries[1].ids("STORY").await == ["s1"] }).await;
    // A registry that starts with a peer copies its registry.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let late = spawn_on(listener, &[("REGISTRY_PEERS", &registries[0].eureka_url())]).await;
    assert_eq!(late.ids("STORY").await, ["s1"]);
}
