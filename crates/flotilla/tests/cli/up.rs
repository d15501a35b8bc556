//! `flotilla up` end to end: the whole system as processes, rolling restarts and a killed replica
//! under a steady mixed load through the front gateway.

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::helpers::{flotilla, free_port, run_to_end};

pub(crate) struct Up {
    child: Child,
    port: u16,
    data_dir: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        std::thread::sleep(Duration::from_millis(200));
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let _ = self.child.wait();
    }
}

impl Up {
    pub(crate) fn start() -> Up {
        Self::start_printing_to(Stdio::null())
    }

    /// With its standard output going to `stdout` (not a terminal: plain lines).
    fn start_printing_to(stdout: impl Into<Stdio>) -> Up {
        Self::start_with(&[], stdout)
    }

    /// With `extra` arguments.
    fn start_with(extra: &[&str], stdout: impl Into<Stdio>) -> Up {
        let port = free_port();
        let data_dir = tempfile::tempdir().unwrap();
        let port_text = port.to_string();
        let mut args = vec![
            "up",
            "--port",
            &port_text,
            "--data-dir",
            data_dir.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let child = flotilla(&args, &[("PATH", "/usr/bin:/bin")])
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let up = Up {
            child,
            port,
            data_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while up
            .ps()
            .get("front-gateway.1")
            .is_none_or(|r| r.state != "ready")
        {
            assert!(Instant::now() < deadline, "flotilla up did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        up
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn data_dir(&self) -> &str {
        self.data_dir.path().to_str().unwrap()
    }

    /// `flotilla ps`, by `service.replica`.
    pub(crate) fn ps(&self) -> HashMap<String, Row> {
        let output = run_to_end(&["ps", "--data-dir", self.data_dir()], &[]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let [service, replica, pid, address, state, restarts] = cols[..] else {
                    return None;
                };
                let row = Row {
                    pid: pid.parse().ok(),
                    address: address.to_string(),
                    state: state.to_string(),
                    restarts: restarts.parse().unwrap_or(0),
                };
                Some((format!("{service}.{replica}"), row))
            })
            .collect()
    }
}

#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) pid: Option<i32>,
    pub(crate) address: String,
    pub(crate) state: String,
    restarts: u32,
}

/// About 150 requests per second: GET /, GET /api/todo, POST /api/todo, in turn.
struct Load {
    stop: Arc<AtomicBool>,
    created: Arc<Mutex<Vec<i64>>>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(up: &Up) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let created: Arc<Mutex<Vec<i64>>> = Arc::default();
        let threads = (0..3)
            .map(|t| {
                let (stop, created) = (stop.clone(), created.clone());
                let urls = [
                    up.url("/"),
                    up.url("/api/todo?status=TODO"),
                    up.url("/api/todo"),
                ];
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    let mut failures = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(90);
                    for i in 0..20_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        let (what, result) = match i % 3 {
                            0 => ("GET /", client.get(&urls[0]).send()),
                            1 => ("GET /api/todo", client.get(&urls[1]).send()),
                            _ => (
                                "POST /api/todo",
                                client
                                    .post(&urls[2])
                                    .json(&serde_json::json!({ "title": format!("load {t}-{i}") }))
                                    .send(),
                            ),
                        };
                        match result {
                            Ok(response) if response.status().is_success() => {
                                if what.starts_with("POST") {
                                    let item: serde_json::Value = response.json().unwrap();
                                    created.lock().unwrap().push(item["id"].as_i64().unwrap());
                                }
                            }
                            Ok(response) => failures.push(format!("{what}: {}", response.status())),
                            Err(error) => failures.push(format!("{what}: {error:#}")),
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    failures
                })
            })
            .collect();
        Load {
            stop,
            created,
            threads,
        }
    }

    fn finish(self) -> (Vec<i64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let created = self.created.lock().unwrap().clone();
        (created, failures)
    }
}

#[test]
fn rollouts_and_a_killed_api_replica_lose_no_request() {
    let up = Up::start();

    let load = Load::start(&up);
    std::thread::sleep(Duration::from_secs(2));
    for service in ["todo-api", "todo-web"] {
        let output = run_to_end(&["rollout", service, "--data-dir", up.data_dir()], &[]);
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "rollout {service}: {text}");
        assert!(text.contains("replaced 2 replicas"), "{text}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let (created, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests during rollouts: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        created.len() > 50,
        "only {} TODOs were created",
        created.len()
    );
    let client = reqwest::blocking::Client::new();
    for id in &created {
        let status = client
            .get(up.url(&format!("/api/todo/{id}")))
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 200, "TODO {id} got a 201 and must be readable");
    }

    let load = Load::start(&up);
    std::thread::sleep(Duration::from_secs(1));
    let victim = up.ps()["todo-api.1"].pid.expect("todo-api.1 runs");
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = up.ps();
        let row = &rows["todo-api.1"];
        if row.state == "ready" && row.restarts == 1 && row.pid != Some(victim) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "todo-api.1 did not come back: {row:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (_, failures) = load.finish();
    let failed_gets: Vec<&String> = failures.iter().filter(|f| f.starts_with("GET")).collect();
    assert!(
        failed_gets.is_empty(),
        "failed GETs after SIGKILL: {failed_gets:?}"
    );
}

/// Whether a process runs (a zombie does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn it_prints_each_process_and_prefixed_logs_and_ctrl_c_stops_in_dependency_order() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("up.out");
    let mut up = Up::start_printing_to(std::fs::File::create(&output).unwrap());
    let pids: Vec<i32> = up.ps().values().filter_map(|r| r.pid).collect();
    assert_eq!(
        pids.len(),
        9,
        "a trace collector, a registry, 2 APIs, 2 boards, 2 gateways, a dashboard"
    );
    assert_eq!(
        reqwest::blocking::get(up.url("/api/todo"))
            .unwrap()
            .status(),
        200
    );
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGINT).unwrap();
    let status = up.child.wait().unwrap();
    assert!(status.success(), "{status}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} is still running");
    }

    let text = std::fs::read_to_string(&output).unwrap();
    // What started and where, one plain line per change (stdout is not a terminal here).
    for replica in [
        "traces.1",
        "registry.1",
        "todo-api.1",
        "todo-api.2",
        "api-gateway.1",
        "todo-web.1",
        "todo-web.2",
        "front-gateway.1",
        "dashboard.1",
    ] {
        let line = format!("flotilla up: {replica} ready pid=");
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
    }
    // Every child's log lines, prefixed by service and replica.
    let prefixed = |label: &str| {
        text.lines()
            .any(|l| l.trim_start().starts_with(&format!("{label} | ")))
    };
    assert!(
        prefixed("todo-api.1") && prefixed("todo-web.2") && prefixed("front-gateway.1"),
        "{text}"
    );
    // Stopped front to back, the registry and the trace collector last.
    let order: Vec<usize> = [
        "dashboard",
        "front-gateway",
        "todo-web",
        "api-gateway",
        "todo-api",
        "registry",
        "traces",
    ]
    .iter()
    .map(|s| {
        text.find(&format!("flotilla up: stopping {s}\n"))
            .unwrap_or_else(|| panic!("{s}: {text}"))
    })
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "stop order {order:?}"
    );
    assert!(text.contains("flotilla up: everything stopped"));
    // The APIs and boards registered, and left the registry before draining.
    for service in ["todo-api", "todo-web"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{service}.1 |"))
                    && l.contains("registered")),
            "{service} did not register: {text}"
        );
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{service}.1 |"))
                    && l.contains("deregistered")),
            "{service} did not leave the registry: {text}"
        );
    }
}

#[test]
fn a_second_ctrl_c_kills_everything_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("up.out");
    let mut up = Up::start_printing_to(std::fs::File::create(&output).unwrap());
    let pids: Vec<i32> = up.ps().values().filter_map(|r| r.pid).collect();
    // A request whose body never finishes keeps the front gateway draining (up to its 10 s
    // drain timeout), so the graceful stop is still under way when the second Ctrl-C comes.
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", up.port)).unwrap();
    std::io::Write::write_all(
        &mut stalled,
        b"POST /api/todo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"title\"",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let supervisor = Pid::from_raw(up.child.id() as i32);
    kill(supervisor, Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&output)
        .unwrap()
        .contains("front-gateway.1 stopping")
    {
        assert!(Instant::now() < deadline, "the graceful stop did not begin");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(supervisor, Signal::SIGINT).unwrap();
    let status = up.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(text.contains("flotilla up: killed"), "{text}");
    assert!(!text.contains("everything stopped"), "{text}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} is still running");
    }
}

#[test]
fn the_children_stop_when_the_supervisor_is_killed_with_sigkill() {
    let mut up = Up::start();
    let children: Vec<i32> = up.ps().values().filter_map(|row| row.pid).collect();
    assert!(children.len() >= 6, "{children:?}");
    let alive = |pid: i32| kill(Pid::from_raw(pid), None).is_ok();
    assert!(children.iter().all(|&pid| alive(pid)));
    // No chance to stop them: SIGKILL.
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGKILL).unwrap();
    up.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Children of a dead parent are reaped by init once they exit.
        let left: Vec<i32> = children.iter().copied().filter(|&pid| alive(pid)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left:?} outlived their supervisor"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_request_through_the_whole_system_is_one_trace_with_every_hop() {
    // flotilla up runs a trace collector and points every service at it.
    let up = Up::start();
    let collector = format!("http://{}", up.ps()["traces.1"].address);
    // As Spring Cloud Sleuth calls: multi-header B3 with a 64-bit trace id.
    let (trace_id, caller_span) = ("5af7183fb1d4cf5f", "6b221d5bc9e6496c");
    let board = reqwest::blocking::Client::new()
        .get(up.url("/"))
        .header("X-B3-TraceId", trace_id)
        .header("X-B3-SpanId", caller_span)
        .header("X-B3-Sampled", "1")
        .send()
        .unwrap();
    assert_eq!(board.status(), 200);

    // front gateway (+ its call) -> board -> 3 calls -> API gateway (+ its call) -> API ->
    // database: 18 spans.
    let url = format!("{collector}/api/v2/trace/{trace_id}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans: Vec<serde_json::Value> = loop {
        let found: Vec<serde_json::Value> = reqwest::blocking::get(&url)
            .ok()
            .filter(|r| r.status() == 200)
            .and_then(|r| r.json().ok())
            .unwrap_or_default();
        if found.len() >= 18 {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "{} spans of 18: {found:#?}",
            found.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let service = |s: &serde_json::Value| {
        s["localEndpoint"]["serviceName"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let count = |name: &str, kind: &str| {
        spans
            .iter()
            .filter(|s| service(s) == name && s["kind"] == kind)
            .count()
    };
    assert_eq!(count("front-gateway", "SERVER"), 1);
    assert_eq!(count("front-gateway", "CLIENT"), 1, "one attempt upstream");
    assert_eq!(count("todo-web", "SERVER"), 1);
    assert_eq!(count("todo-web", "CLIENT"), 3, "one call per column");
    assert_eq!(count("api-gateway", "SERVER"), 3);
    assert_eq!(count("api-gateway", "CLIENT"), 3);
    assert_eq!(count("todo-api", "SERVER"), 3);
    assert_eq!(count("todo-api", "CLIENT"), 3, "one query per call");
    let query = spans
        .iter()
        .find(|s| service(s) == "todo-api" && s["kind"] == "CLIENT")
        .unwrap();
    assert_eq!(query["name"], "select todo");
    assert_eq!(query["tags"]["db.system.name"], "sqlite");
    assert_eq!(query["remoteEndpoint"]["serviceName"], "sqlite");
    // Correctly parented: the front gateway's span under the caller's, every other span under
    // one of the trace.
    let ids: std::collections::HashSet<&str> =
        spans.iter().map(|s| s["id"].as_str().unwrap()).collect();
    for span in &spans {
        let parent = span["parentId"].as_str().unwrap_or("none");
        if service(span) == "front-gateway" && span["kind"] == "SERVER" {
            assert_eq!(parent, caller_span);
        } else {
            assert!(
                ids.contains(parent),
                "{span} has a parent outside the trace"
            );
        }
    }
    let parent_service = |span: &serde_json::Value| {
        let parent = span["parentId"].as_str().unwrap();
        service(spans.iter().find(|s| s["id"] == parent).unwrap())
    };
    for span in &spans {
        let expected = match (service(span).as_str(), span["kind"].as_str()) {
            ("front-gateway", Some("CLIENT")) => "front-gateway",
            ("todo-web", Some("SERVER")) => "front-gateway",
            ("todo-web", Some("CLIENT")) => "todo-web",
            ("api-gateway", Some("SERVER")) => "todo-web",
            ("api-gateway", Some("CLIENT")) => "api-gateway",
            ("todo-api", Some("SERVER")) => "api-gateway",
            ("todo-api", Some("CLIENT")) => "todo-api",
            _ => continue,
        };
        assert_eq!(parent_service(span), expected, "{span}");
    }
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 1000;
    let links: Vec<serde_json::Value> =
        reqwest::blocking::get(format!("{collector}/api/v2/dependencies?endTs={end}"))
            .unwrap()
            .json()
            .unwrap();
    let pairs: Vec<(String, String)> = links
        .iter()
        .map(|l| {
            (
                l["parent"].as_str().unwrap().into(),
                l["child"].as_str().unwrap().into(),
            )
        })
        .collect();
    for (parent, child) in [
        ("front-gateway", "todo-web"),
        ("todo-web", "api-gateway"),
        ("api-gateway", "todo-api"),
        ("todo-api", "sqlite"),
    ] {
        assert!(
            pairs.contains(&(parent.to_string(), child.to_string())),
            "{parent} -> {child} in {pairs:?}"
        );
    }
    assert_eq!(pairs.len(), 4, "no other links: {pairs:?}");
}

#[test]
fn up_with_video_runs_the_video_pair_behind_the_front_gateway() {
    let up = Up::start_with(&["--video"], Stdio::null());
    let table = up.ps();
    for replica in ["video-storage.1", "video-streaming.1"] {
        assert_eq!(
            table.get(replica).map(|r| r.state.as_str()),
            Some("ready"),
            "{table:?}"
        );
    }
    let client = reqwest::blocking::Client::new();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let form = reqwest::blocking::multipart::Form::new()
        .text("title", "Through the gateway")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(data.clone()).file_name("clip.webm"),
        );
    let created = client
        .post(up.url("/videos/api/videos"))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    let video: serde_json::Value = created.json().unwrap();
    let id = video["id"].as_str().unwrap();
    // Stored in the data directory, streamed with ranges through the front gateway.
    let stored = up.data_dir.path().join("videos").join(id).join("clip.webm");
    assert_eq!(std::fs::read(&stored).unwrap(), data);
    let part = client
        .get(up.url(&format!("/videos/video?id={id}")))
        .header("range", "bytes=50000-50099")
        .send()
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().unwrap().as_ref(), &data[50_000..50_100]);
    let page = client
        .get(up.url("/videos/"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("Through the gateway"), "{page}");
    // The TODO system is there as before.
    assert_eq!(
        client.get(up.url("/api/todo")).send().unwrap().status(),
        200
    );
}
