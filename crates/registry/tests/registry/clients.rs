//! Real Eureka clients against the registry: py-eureka-client (the Python story-service of seed
//! 004) and eureka-js-client (a Node service looking up todo-api), as `scripts/setup.sh`
//! installs them into `target/clients`. They register, heartbeat, fetch (XML for Python, JSON
//! for Node), deregister on stop; a client killed with SIGKILL is evicted after its lease.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use platform::Source;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::helpers::{spawn_registry, wait_until};

/// Where `scripts/setup.sh` installs the clients.
pub(crate) fn clients_dir() -> PathBuf {
    let dir = std::env::var_os("FLOTILLA_CLIENTS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/clients"),
        PathBuf::from,
    );
    assert!(
        dir.join("py/bin/python").exists() && dir.join("js/node_modules/eureka-js-client").exists(),
        "the Eureka clients are not installed in {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

pub(crate) fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

pub(crate) async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

pub(crate) struct Client {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Client {
    pub(crate) fn spawn(command: &mut Command) -> Client {
        let mut child = command
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the client");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Client { child, lines }
    }

    /// The next line the client prints that satisfies `wanted`, within 20 s.
    pub(crate) async fn line_where(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                if wanted(&line) {
                    return line;
                }
            }
            panic!("the client ended without printing the line waited for");
        });
        found
            .await
            .expect("the client printed the line within 20 s")
    }

    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }
}

#[tokio::test]
async fn py_eureka_client_registers_fetches_deregisters_and_a_killed_one_is_evicted() {
    let clients = clients_dir();
    let registry = spawn_registry(&[]).await;
    let python = clients.join("py/bin/python");
    let story = |port: u16| {
        let mut command = Command::new(&python);
        command
            .arg(script("story_service.py"))
            .arg(registry.eureka_url())
            .arg(port.to_string());
        Client::spawn(&mut command)
    };
    let port = free_port().await;
    let mut first = story(port);
    first.line_where(|l| l == "ready").await;
    wait_until(|| async { registry.ids("STORY-SERVICE").await.len() == 1 }).await;
    let app = registry.get_json("/eureka/apps/STORY-SERVICE").await;
    let instance = &app["application"]["instance"][0];
    assert_eq!(instance["ipAddr"], "127.0.0.1");
    assert_eq!(instance["port"]["$"], port);
    // The client's own copy of the registry, fetched as XML, holds its app.
    wait_until(|| async {
        let apps = reqwest::get(format!("http://127.0.0.1:{port}/apps")).await;
        match apps {
            Ok(answer) => answer
                .text()
                .await
                .unwrap_or_default()
                .contains("STORY-SERVICE"),
            Err(_) => false,
        }
    })
    .await;
    // Heartbeats keep it registered past its 3 s lease.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(registry.ids("STORY-SERVICE").await.len(), 1);

    // A second one, killed with SIGKILL: evicted once its lease runs out.
    let mut second = story(free_port().await);
    second.line_where(|l| l == "ready").await;
    wait_until(|| async { registry.ids("STORY-SERVICE").await.len() == 2 }).await;
    second.signal(nix::sys::signal::Signal::SIGKILL);
    wait_until(|| async { registry.ids("STORY-SERVICE").await.len() == 1 }).await;

    // SIGTERM: the client deregisters.
    first.signal(nix::sys::signal::Signal::SIGTERM);
    wait_until(|| async { registry.ids("STORY-SERVICE").await.is_empty() }).await;
    let status = tokio::time::timeout(Duration::from_secs(10), first.child.wait()).await;
    assert!(status.expect("exits").unwrap().success());
}

#[tokio::test]
async fn eureka_js_client_registers_finds_todo_api_and_deregisters() {
    let clients = clients_dir();
    let registry = spawn_registry(&[]).await;
    // A real todo-api, registering itself.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("todo.db").display());
    let registry_url = registry.eureka_url();
    let source = Source::from_pairs([
        ("TODO_PRIMARY_URL", db.as_str()),
        ("FLOTILLA_REGISTRY_URL", registry_url.as_str()),
        ("FLOTILLA_APP_NAME", "todo-api"),
    ]);
    let config = todo_api::Config::from_source(&source).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let todo_api = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(todo_api::run(listener, config, async {
        let _ = stopped.await;
    }));
    wait_until(|| async { registry.ids("TODO-API").await.len() == 1 }).await;

    let port = free_port().await;
    let mut command = Command::new("node");
    command
        .arg(script("js_service.js"))
        .arg(registry.addr.port().to_string())
        .arg(port.to_string())
        .env("NODE_PATH", clients.join("js/node_modules"));
    let mut js = Client::spawn(&mut command);
    js.line_where(|l| l == "registered").await;
    assert_eq!(
        registry.ids("JS-SERVICE").await,
        [format!("127.0.0.1:js-service:{port}")]
    );
    let found = js.line_where(|l| l.contains(&todo_api)).await;
    assert_eq!(found, format!(r#"{{"todo":["{todo_api}"]}}"#));
    // Its heartbeats (every second) are answered with 200: it stays registered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(registry.ids("JS-SERVICE").await.len(), 1);

    js.signal(nix::sys::signal::Signal::SIGTERM);
    js.line_where(|l| l == "deregistered").await;
    assert!(registry.ids("JS-SERVICE").await.is_empty());
}
