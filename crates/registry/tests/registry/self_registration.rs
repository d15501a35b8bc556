//! A Flotilla service registers itself once ready, fails over between registry URLs, and on
//! shutdown leaves the registry before it drains.

use platform::Source;

use crate::helpers::{spawn_registry, wait_until};

#[tokio::test]
async fn a_service_registers_itself_fails_over_and_leaves_before_draining() {
    let registry = spawn_registry(&[]).await;
    // The first URL has nothing listening: the service fails over to the second.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/eureka/", dead.local_addr().unwrap());
    drop(dead);
    let urls = format!("{dead_url},{}", registry.eureka_url());
    let source = Source::from_pairs([
        ("FLOTILLA_REGISTRY_URL", urls.as_str()),
        ("FLOTILLA_APP_NAME", "echo"),
        ("FLOTILLA_REGISTRY_RENEWAL", "1s"),
        ("FLOTILLA_SHUTDOWN_DELAY", "2s"),
        ("HOSTNAME", "echo-test"),
    ]);
    let config = echo::Config::from_source(&source).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(echo::run(listener, config, async {
        let _ = stopped.await;
    }));
    wait_until(|| async { registry.ids("ECHO").await.len() == 1 }).await;
    let all = registry.get_json("/eureka/apps/ECHO").await;
    let registered = &all["application"]["instance"][0];
    assert_eq!(registered["ipAddr"], "127.0.0.1");
    assert_eq!(registered["port"]["$"], port);
    assert_eq!(registered["leaseInfo"]["durationInSecs"], 3);

    // Its heartbeats keep it there past its lease.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(registry.ids("ECHO").await.len(), 1);

    // Shutdown: gone from the registry while the service still serves (its shutdown delay).
    stop.send(()).unwrap();
    wait_until(|| async { registry.ids("ECHO").await.is_empty() }).await;
    let still_serving = reqwest::get(format!("http://127.0.0.1:{port}/")).await;
    assert!(
        still_serving.is_ok(),
        "the service left the registry only after it stopped serving"
    );
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_gateway_registers_its_public_listener_never_its_admin_one_and_leaves_on_shutdown() {
    let registry = spawn_registry(&[]).await;
    let text = r#"access_log = "off"
[admin]
bind = "127.0.0.1:0"
[[listener]]
bind = "127.0.0.1:0"
[[route]]
path = "/"
upstream = "board"
[upstream.board]
server = [{ address = "127.0.0.1:9" }]
"#;
    let loaded = gateway::load::from_text("test.toml", text, &Source::default()).unwrap();
    let url = registry.eureka_url();
    let common = platform::CommonConfig::from_source(&Source::from_pairs([
        ("FLOTILLA_REGISTRY_URL", url.as_str()),
        ("FLOTILLA_APP_NAME", "front"),
        ("FLOTILLA_REGISTRY_RENEWAL", "1s"),
        ("HOSTNAME", "front-test"),
    ]))
    .unwrap();
    let bound = gateway::bind(&gateway::Config::new(loaded, common))
        .await
        .unwrap();
    let public = bound.addresses()[0];
    let admin = bound.admin_address().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    wait_until(|| async { registry.ids("FRONT").await.len() == 1 }).await;
    let app = registry.get_json("/eureka/apps/FRONT").await;
    let instances = app["application"]["instance"].as_array().unwrap().clone();
    assert_eq!(
        instances.len(),
        1,
        "one instance: the admin listener is not registered"
    );
    assert_eq!(instances[0]["ipAddr"], "127.0.0.1");
    assert_eq!(instances[0]["port"]["$"], public.port());
    assert_ne!(instances[0]["port"]["$"], admin.port());
    assert_eq!(instances[0]["status"], "UP");

    stop.send(()).unwrap();
    wait_until(|| async { registry.ids("FRONT").await.is_empty() }).await;
    server.await.unwrap().unwrap();
}
