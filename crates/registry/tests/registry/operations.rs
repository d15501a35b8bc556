//! Every Eureka operation, in both formats and under both prefixes, and what bad input gets.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{instance, spawn_registry};

#[tokio::test]
async fn every_operation_answers_as_eureka_does() {
    let registry = spawn_registry(&[]).await;
    let response = registry
        .register(&instance("story-service", "h:story:1", 9001))
        .await;
    assert_eq!(response.status(), 204);

    // XML body, under /eureka/v2/, app in lower case in the path.
    let xml = r#"<instance><instanceId>h:story:2</instanceId><hostName>127.0.0.1</hostName>
        <app>STORY-SERVICE</app><ipAddr>127.0.0.1</ipAddr><status>UP</status>
        <port enabled="true">9002</port><vipAddress>story-service</vipAddress>
        <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
        </instance>"#;
    let response = registry
        .client
        .post(registry.url("/eureka/v2/apps/story-service/"))
        .header("content-type", "application/xml")
        .body(xml)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        registry.ids("STORY-SERVICE").await,
        ["h:story:1", "h:story:2"]
    );

    // Heartbeat with a percent-encoded id: 200 with an empty body; unknown: 404.
    let heartbeat = registry
        .client
        .put(registry.url("/eureka/apps/STORY-SERVICE/h%3Astory%3A1?status=UP"))
        .send()
        .await
        .unwrap();
    assert_eq!(heartbeat.status(), 200);
    assert_eq!(heartbeat.text().await.unwrap(), "");
    assert_eq!(
        registry
            .send(Method::PUT, "/eureka/apps/STORY-SERVICE/nope")
            .await,
        404
    );
    assert_eq!(
        registry
            .send(Method::PUT, "/eureka/apps/OTHER/h:story:1")
            .await,
        404
    );

    // Full fetch in XML by default, JSON when asked; one app; one instance; by id; by VIP.
    let xml = registry.get("/eureka/apps/").await.text().await.unwrap();
    assert!(
        xml.contains("<apps__hashcode>UP_2_</apps__hashcode>"),
        "{xml}"
    );
    let app = registry.get_json("/eureka/apps/story-service").await;
    assert_eq!(app["application"]["instance"].as_array().unwrap().len(), 2);
    let one = registry
        .get_json("/eureka/v2/apps/STORY-SERVICE/h:story:2")
        .await;
    assert_eq!(one["instance"]["port"]["$"], 9002);
    let by_id = registry.get_json("/eureka/instances/h%3Astory%3A1").await;
    assert_eq!(by_id["instance"]["app"], "STORY-SERVICE");
    let vip = registry.get_json("/eureka/vips/story-service").await;
    assert_eq!(
        vip["applications"]["application"][0]["instance"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        registry.get("/eureka/svips/story-service").await.status(),
        404
    );
    assert_eq!(registry.get("/eureka/apps/NOPE").await.status(), 404);

    // Status override takes the instance out of rotation; its removal puts it back.
    let path = "/eureka/apps/STORY-SERVICE/h:story:1/status";
    assert_eq!(
        registry
            .send(Method::PUT, &format!("{path}?value=OUT_OF_SERVICE"))
            .await,
        200
    );
    let one = registry
        .get_json("/eureka/apps/STORY-SERVICE/h:story:1")
        .await;
    assert_eq!(one["instance"]["status"], "OUT_OF_SERVICE");
    assert_eq!(one["instance"]["overriddenStatus"], "OUT_OF_SERVICE");
    let all = registry.get_json("/eureka/apps").await;
    assert_eq!(
        all["applications"]["apps__hashcode"],
        "OUT_OF_SERVICE_1_UP_1_"
    );
    assert_eq!(
        registry
            .send(Method::DELETE, &format!("{path}?value=UP"))
            .await,
        200
    );
    let one = registry
        .get_json("/eureka/apps/STORY-SERVICE/h:story:1")
        .await;
    assert_eq!(one["instance"]["status"], "UP");
    assert_eq!(
        registry
            .send(Method::PUT, &format!("{path}?value=SIDEWAYS"))
            .await,
        400
    );

    // Metadata.
    let metadata = "/eureka/apps/STORY-SERVICE/h:story:1/metadata?zone=a&weight=3";
    assert_eq!(registry.send(Method::PUT, metadata).await, 200);
    let one = registry
        .get_json("/eureka/apps/STORY-SERVICE/h:story:1")
        .await;
    assert_eq!(
        one["instance"]["metadata"],
        json!({"zone": "a", "weight": "3"})
    );

    // Delta: the changes of the last minutes, with the hashcode of the whole registry.
    assert_eq!(
        registry
            .send(Method::DELETE, "/eureka/apps/STORY-SERVICE/h:story:2")
            .await,
        200
    );
    assert_eq!(
        registry
            .send(Method::DELETE, "/eureka/apps/STORY-SERVICE/h:story:2")
            .await,
        404
    );
    let delta = registry.get_json("/eureka/apps/delta").await;
    assert_eq!(delta["applications"]["apps__hashcode"], "UP_1_");
    let actions: Vec<(String, String)> = delta["applications"]["application"][0]["instance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["instanceId"].as_str().unwrap().into(),
                i["actionType"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("h:story:2".into(), "DELETED".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("h:story:1".into(), "MODIFIED".into())),
        "{actions:?}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_refusal_and_changes_nothing() {
    let registry = spawn_registry(&[]).await;
    registry.register(&instance("a", "a1", 1)).await;
    let before = registry.get("/eureka/apps").await.text().await.unwrap();
    let version = registry.version().await;

    let many_keys: serde_json::Map<String, serde_json::Value> =
        (0..10_000).map(|i| (format!("k{i}"), json!("v"))).collect();
    let mut huge_metadata = instance("a", "a2", 2);
    huge_metadata["instance"]["metadata"] = serde_json::Value::Object(many_keys);
    let mut absurd_lease = instance("a", "a3", 3);
    absurd_lease["instance"]["leaseInfo"]["durationInSecs"] = json!(1_000_000_000);
    let mut dotted = instance("a", "..", 4);
    dotted["instance"]["hostName"] = json!("x");
    let mut slashed = instance("a", "x/y", 5);
    slashed["instance"]["hostName"] = json!("x");
    let mut no_ip = instance("a", "a6", 6);
    no_ip["instance"].as_object_mut().unwrap().remove("ipAddr");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/eureka/apps/A",
            "{\"instance\": ".into(),
            400,
            "not valid JSON",
        ),
        (
            "/eureka/apps/A",
            "<instance><app>A</app>".into(),
            400,
            "not valid XML",
        ),
        (
            "/eureka/apps/A",
            huge_metadata.to_string(),
            400,
            "metadata has more than",
        ),
        (
            "/eureka/apps/A",
            absurd_lease.to_string(),
            400,
            "durationInSecs must be",
        ),
        (
            "/eureka/apps/A",
            dotted.to_string(),
            400,
            "instanceId must not contain",
        ),
        (
            "/eureka/apps/A",
            slashed.to_string(),
            400,
            "instanceId must not contain",
        ),
        (
            "/eureka/apps/A",
            no_ip.to_string(),
            400,
            "ipAddr is required",
        ),
        (
            "/eureka/apps/B",
            instance("a", "a7", 7).to_string(),
            400,
            "not the app in the path",
        ),
        (
            "/eureka/apps/A",
            "x".repeat(10 << 20),
            413,
            "larger than 256 KiB",
        ),
    ];
    for (path, body, status, message) in cases {
        let response = registry
            .client
            .post(registry.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{message}");
        let text = response.text().await.unwrap();
        assert!(text.contains(message), "expected {message:?} in {text}");
    }
    // Ids with separators or dot segments, wherever they arrive.
    for path in [
        "/eureka/apps/A/a%2F..",
        "/eureka/apps/A/..",
        "/eureka/instances/..%2Fetc",
    ] {
        let status = registry.send(Method::PUT, path).await;
        assert!(
            status == 400 || status == 404 || status == 405,
            "{path}: {status}"
        );
    }
    assert_eq!(
        registry
            .send(Method::PUT, "/eureka/apps/A/a1?lastDirtyTimestamp=soon")
            .await,
        400
    );
    assert_eq!(
        registry.send(Method::GET, "/eureka/apps?version=x").await,
        400
    );
    assert_eq!(registry.version().await, version);
    assert_eq!(
        registry.get("/eureka/apps").await.text().await.unwrap(),
        before
    );
    // And it still answers everyone else.
    assert_eq!(
        registry.register(&instance("a", "a8", 8)).await.status(),
        204
    );
}

#[tokio::test]
async fn an_expired_lease_is_evicted_and_the_watch_returns_on_the_change() {
    let registry = spawn_registry(&[]).await;
    let version = registry.version().await;
    // A watcher waiting on the current version returns as soon as anything changes, with the
    // new version (a timeout would return the same one: it waits up to 30 s).
    let watcher = {
        let client = registry.client.clone();
        let url = registry.url(&format!("/eureka/apps?version={version}&wait=30"));
        tokio::spawn(async move {
            let answer: serde_json::Value = client
                .get(url)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["applications"]["versions__delta"]
                .as_str()
                .unwrap()
                .to_string()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // Lease of 2 s, never renewed.
    registry.register(&instance("gone", "g1", 1)).await;
    let seen = watcher.await.unwrap();
    assert_ne!(seen, version.to_string());
    assert_eq!(registry.ids("GONE").await, ["g1"]);
    registry
        .wait_until(|| async { registry.ids("GONE").await.is_empty() })
        .await;
}

#[tokio::test]
async fn a_restarted_registry_keeps_its_instances_with_registry_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("registry.db");
    let data = data.to_str().unwrap();
    let registry = spawn_registry(&[("REGISTRY_DATA", data)]).await;
    let mut kept = instance("kept", "k1", 1);
    kept["instance"]["leaseInfo"]["durationInSecs"] = json!(90);
    registry.register(&kept).await;
    registry.stop().await;
    let again = spawn_registry(&[("REGISTRY_DATA", data)]).await;
    assert_eq!(again.ids("KEPT").await, ["k1"]);
}

#[tokio::test]
async fn the_dashboard_lists_instances_and_waits_for_changes() {
    let registry = spawn_registry(&[]).await;
    registry
        .register(&instance("story-service", "h:story:1", 9001))
        .await;
    let page = registry.get("/").await.text().await.unwrap();
    assert!(
        page.contains("STORY-SERVICE") && page.contains("127.0.0.1:9001"),
        "{page}"
    );
    assert!(page.contains("1 of 1 up"));
    let script = registry.get("/dashboard.js").await;
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
}
