//! The gateway following the registry: seed 004's Zuul route `/api/{service}/**` and an upstream
//! whose servers are an app's instances, with seed 004's Python story-service registered by
//! py-eureka-client, and a Flotilla service registering and leaving while the gateway routes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use platform::{CommonConfig, Source};

use crate::clients::{Client, clients_dir, free_port, script};
use crate::helpers::{spawn_registry, wait_until};

struct Gateway {
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn spawn_gateway(registry: &str) -> Gateway {
    let text = format!(
        r#"access_log = "off"
[admin]
bind = "off"
[registry]
url = "{registry}"
[[listener]]
bind = "127.0.0.1:0"
[[route]]
path = "/api/{{service}}/"
[[route]]
path = "/story/"
upstream = "story"
[upstream.story]
discovery = "registry:story-service"
"#
    );
    let loaded = gateway::load::from_text("test.toml", &text, &Source::default()).unwrap();
    let common = CommonConfig::from_source(&Source::default()).unwrap();
    let bound = gateway::bind(&gateway::Config::new(loaded, common))
        .await
        .unwrap();
    let addr = bound.addresses()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    Gateway { addr, _stop: stop }
}

async fn get(url: String) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(answer) => (
            answer.status().as_u16(),
            answer.text().await.unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

#[tokio::test]
async fn the_gateway_routes_by_service_name_to_every_registered_instance() {
    let clients = clients_dir();
    let registry = spawn_registry(&[]).await;
    let python = clients.join("py/bin/python");
    let mut ports = Vec::new();
    let mut stories = Vec::new();
    for _ in 0..2 {
        let port = free_port().await;
        let mut command = tokio::process::Command::new(&python);
        command
            .arg(script("story_service.py"))
            .arg(registry.eureka_url())
            .arg(port.to_string());
        let mut story = Client::spawn(&mut command);
        story.line_where(|l| l == "ready").await;
        ports.push(port);
        stories.push(story);
    }
    wait_until(|| async { registry.ids("STORY-SERVICE").await.len() == 2 }).await;
    let gateway = spawn_gateway(&registry.eureka_url()).await;
    let base = format!("http://{}", gateway.addr);

    // Zuul's convention: /api/story-service/story reaches /story on every replica in turn.
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let (status, body) = get(format!("{base}/api/story-service/story")).await;
        assert_eq!(status, 200, "{body}");
        seen.insert(body);
    }
    let expected: BTreeSet<String> = ports
        .iter()
        .map(|p| format!("story from {p}/story"))
        .collect();
    assert_eq!(seen, expected);
    // The app name in any case, and an upstream fed by the registry.
    assert_eq!(get(format!("{base}/api/STORY-SERVICE/story")).await.0, 404);
    let (status, body) = get(format!("{base}/story/x")).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("story from "), "{body}");
    // An unknown service is named in the answer.
    let (status, body) = get(format!("{base}/api/nope/x")).await;
    assert_eq!(status, 404);
    assert!(
        body.contains(r#"no service named \"nope\" is registered"#),
        "{body}"
    );

    // A Flotilla service registers: the gateway routes to it as soon as the registry has it.
    let source = Source::from_pairs([
        ("FLOTILLA_REGISTRY_URL", registry.eureka_url().as_str()),
        ("FLOTILLA_APP_NAME", "echo"),
        ("HOSTNAME", "echo-1"),
    ]);
    let config = echo::Config::from_source(&source).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop_echo, echo_stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let echo = tokio::spawn(echo::run(listener, config, async {
        let _ = echo_stopped.await;
    }));
    wait_until(|| async {
        get(format!("{base}/api/echo/"))
            .await
            .1
            .starts_with("echo-1,")
    })
    .await;
    eprintln!("registration to routed: {:?}", started.elapsed());
    // It leaves on shutdown: the gateway stops sending to it.
    let leaving = Instant::now();
    stop_echo.send(()).unwrap();
    wait_until(|| async { get(format!("{base}/api/echo/")).await.0 == 404 }).await;
    eprintln!("cancel to unrouted: {:?}", leaving.elapsed());
    echo.await.unwrap().unwrap();

    // A story replica killed with SIGKILL: retries and passive health keep every answer good
    // until the registry evicts it.
    let killed = Instant::now();
    stories[0].signal(nix::sys::signal::Signal::SIGKILL);
    for _ in 0..20 {
        let (status, body) = get(format!("{base}/api/story-service/story")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, format!("story from {}/story", ports[1]));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its lease (3 s) runs out: evicted, and the gateway's servers follow.
    wait_until(|| async { registry.ids("STORY-SERVICE").await.len() == 1 }).await;
    eprintln!("SIGKILL to evicted: {:?}", killed.elapsed());
}
