//! The gateway as a process in front of `flotilla echo` processes: restarts and crashes of the
//! backends under a steady load lose no request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::helpers::{Running, free_port, run_to_end, start, start_on};

/// A steady GET load over keep-alive connections, bounded in count and time.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, url) = (stop.clone(), ok.clone(), url.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut failures = Vec::new();
                    for _ in 0..50_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        match client.get(&url).send() {
                            Ok(response) if response.status() == 200 => {
                                let body = response.text().unwrap_or_default();
                                if body.contains(", current time : ") {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    failures.push(format!("body {body:?}"));
                                }
                            }
                            Ok(response) => failures.push(format!(
                                "{} {}",
                                response.status(),
                                response.text().unwrap_or_default()
                            )),
                            Err(error) => failures.push(format!("{error:#}")),
                        }
                        // About 200 requests per second per client.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, threads }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the load; every failure it saw.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

fn echo(name: &str, port: u16) -> Running {
    let bind = format!("127.0.0.1:{port}");
    start_on("echo", &bind, &[], &[("HOSTNAME", name)])
}

/// Waits until a request through the gateway is answered by `name`.
fn wait_served_by(gateway: &Running, name: &str) {
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(gateway.url("/")).send()
            && response
                .text()
                .unwrap_or_default()
                .starts_with(&format!("{name},"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} never served through the gateway");
}

#[test]
fn restarting_each_backend_in_turn_loses_no_request() {
    let ports = [free_port(), free_port()];
    let mut backends = [echo("one", ports[0]), echo("two", ports[1])];
    let hosts = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let gateway = start(
        "gateway",
        &[],
        &[
            ("BACKEND_HOST", &hosts),
            ("LOG_STDOUT", "true"),
            ("BACKEND_HEALTH_PATH", "/ready"),
            ("GATEWAY_ADMIN_BIND", "off"),
        ],
    );
    let load = Load::start(gateway.url("/"), 4);

    for (i, name) in ["one", "two"].into_iter().enumerate() {
        let before = load.ok();
        while load.ok() < before + 200 {
            std::thread::sleep(Duration::from_millis(10));
        }
        backends[i].signal(Signal::SIGTERM);
        assert_eq!(
            backends[i].wait_exit(Duration::from_secs(15)).code(),
            Some(0)
        );
        backends[i] = echo(name, ports[i]);
        // As Swarm's update_config would: the next replica goes only once this one serves again.
        wait_served_by(&gateway, name);
    }

    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok >= 400, "only {ok} requests ran");
}

#[test]
fn a_backend_killed_with_sigkill_loses_no_idempotent_request_and_is_taken_out() {
    let ports = [free_port(), free_port()];
    let backends = [echo("one", ports[0]), echo("two", ports[1])];
    let hosts = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let gateway = start(
        "gateway",
        &[],
        &[
            ("BACKEND_HOST", &hosts),
            ("LOG_STDOUT", "true"),
            ("BACKEND_MAX_FAILS", "1"),
            ("BACKEND_FAIL_TIMEOUT", "30s"),
            ("GATEWAY_ADMIN_BIND", "off"),
        ],
    );
    let load = Load::start(gateway.url("/"), 4);
    while load.ok() < 200 {
        std::thread::sleep(Duration::from_millis(10));
    }
    backends[0].signal(Signal::SIGKILL);
    // Passive health takes the dead server out on its first failure (max_fails=1)...
    let taken_out =
        gateway.log_matching(|line| line["message"] == "server taken out after failures");
    assert_eq!(taken_out["server"], format!("127.0.0.1:{}", ports[0]));
    // ...and from then on only the live one answers.
    let before = load.ok();
    while load.ok() < before + 300 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    let body = reqwest::blocking::get(gateway.url("/"))
        .unwrap()
        .text()
        .unwrap();
    assert!(body.starts_with("two,"), "{body}");
}

#[test]
fn print_config_shows_the_effective_config_from_the_seed_variables() {
    let output = run_to_end(
        &["gateway", "--print-config"],
        &[
            ("BACKEND_HOST", "todoapi:8080"),
            ("SERVER_PORT", "8000"),
            ("BACKEND_FAIL_TIMEOUT", "5s"),
        ],
    );
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("bind = \"0.0.0.0:8000\""), "{text}");
    assert!(text.contains("address = \"todoapi:8080\""), "{text}");
    assert!(text.contains("max_fails = 3"), "{text}");
    assert!(text.contains("fail_timeout = \"5s\""), "{text}");
}

#[test]
fn config_file_errors_name_file_line_and_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[[route]]\nupstream = \"api\"\n\n[upstream.api]\nserver = [{ address = \"127.0.0.1:1\", max_fails = -1 }]\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let output = run_to_end(&["gateway", "--config", path], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "flotilla gateway: {path}:8: upstream.api.server[0].max_fails: "
        )),
        "{stderr}"
    );
    let output = run_to_end(&["gateway"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("flotilla gateway: BACKEND_HOST is required"),
        "{stderr}"
    );
}

#[test]
fn sighup_reloads_routes_and_upstreams_and_keeps_the_old_config_on_errors() {
    let (one, two) = (free_port(), free_port());
    let _backends = [echo("one", one), echo("two", two)];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let config = |port: u16| {
        format!(
            "[admin]\nbind = \"off\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n\
             [upstream.app]\nserver = [{{ address = \"127.0.0.1:{port}\" }}]\n"
        )
    };
    std::fs::write(&path, config(one)).unwrap();
    let gateway = start("gateway", &["--config", path.to_str().unwrap()], &[]);
    let body = || {
        reqwest::blocking::get(gateway.url("/"))
            .unwrap()
            .text()
            .unwrap()
    };
    assert!(body().starts_with("one,"));

    std::fs::write(&path, config(two)).unwrap();
    gateway.signal(Signal::SIGHUP);
    gateway.log_matching(|line| line["message"] == "config reloaded");
    assert!(body().starts_with("two,"));

    std::fs::write(&path, "[[listener]]\nbind = 7\n").unwrap();
    gateway.signal(Signal::SIGHUP);
    let failed = gateway.log_matching(|line| {
        line["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("config reload failed"))
    });
    assert!(
        failed["error"].as_str().unwrap().contains("gateway.toml:2"),
        "{failed}"
    );
    assert!(body().starts_with("two,"), "the running config is kept");
}

#[test]
fn access_log_lines_are_written_out_before_the_gateway_exits() {
    let port = free_port();
    let _backend = echo("one", port);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "access_log = {:?}\n[admin]\nbind = \"off\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n\
             [upstream.app]\nserver = [{{ address = \"127.0.0.1:{port}\" }}]\n",
            log.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut gateway = start("gateway", &["--config", path.to_str().unwrap()], &[]);
    for _ in 0..3 {
        assert_eq!(
            reqwest::blocking::get(gateway.url("/")).unwrap().status(),
            200
        );
    }
    gateway.signal(Signal::SIGTERM);
    assert_eq!(gateway.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    for line in text.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["status"], "200");
    }
}

/// The todonginx variables exactly as seed 000's todo_app stack sets them (typos included: the
/// image ignores `KEEPALICE_TIMEOUT` and `BACKEND_FAILE_TIMEOUT`, and so does the gateway), plus
/// `BASIC_AUTH_FILE`. Two things differ: `BACKEND_HOST` names a local API instead of
/// `todo_app_api:8080`, and `--bind` picks a free port instead of 80.
#[test]
fn the_seeds_nginx_variables_give_gzip_basic_auth_and_a_json_access_log_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let api = start("todo-api", &["--seed"], &[("TODO_PRIMARY_URL", &db)]);
    api.wait_ready();
    let users = dir.path().join("htpasswd");
    // htpasswd -nbB -C 5 gihyo gihyo
    std::fs::write(
        &users,
        "gihyo:$2y$05$vRc0tn/a1yhNQmo.SSz1wOk/YbHQlUNNKMil1z0LUGylRBS.7IQri\n",
    )
    .unwrap();
    let backend = api.addr.to_string();
    let gateway = start(
        "gateway",
        &[],
        &[
            ("WORKER_PROCESSES", "2"),
            ("WORKER_CONNECTIONS", "1024"),
            ("KEEPALICE_TIMEOUT", "65"),
            ("GZIP", "on"),
            ("BACKEND_HOST", &backend),
            ("BACKEND_MAX_FAILS", "3"),
            ("BACKEND_FAILE_TIMEOUT", "10s"),
            ("SERVER_PORT", "80"),
            ("SERVER_NAME", "todo_app_nginx"),
            ("LOG_STDOUT", "true"),
            ("BASIC_AUTH_FILE", users.to_str().unwrap()),
            ("GATEWAY_ADMIN_BIND", "off"),
        ],
    );
    let client = reqwest::blocking::Client::new();
    let url = gateway.url("/todo?status=PROGRESS");

    let refused = client.get(&url).send().unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["www-authenticate"],
        "Basic realm=\"Restricted\""
    );

    let plain = client
        .get(api.url("/todo?status=PROGRESS"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let zipped = client
        .get(&url)
        .basic_auth("gihyo", Some("gihyo"))
        .header("accept-encoding", "gzip")
        .header("host", "todo_app_nginx")
        .send()
        .unwrap();
    assert_eq!(zipped.status(), 200);
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let body = zipped.bytes().unwrap();
    assert!(body.starts_with(&[0x1f, 0x8b]), "a gzip stream");
    assert!(
        body.len() < plain.len(),
        "{} >= {}",
        body.len(),
        plain.len()
    );

    let lines: Vec<serde_json::Value> = (0..2)
        .map(|_| {
            let line = gateway
                .stdout
                .recv_timeout(Duration::from_secs(5))
                .expect("an access log line");
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .collect();
    assert_eq!(lines[0]["status"], "401");
    assert_eq!(lines[1]["status"], "200");
    assert_eq!(lines[1]["request_uri"], "/todo?status=PROGRESS");
    assert_eq!(lines[1]["upstream_addr"], backend.as_str());
    assert!(
        !lines.iter().any(|l| l.to_string().contains("Z2loeW8")),
        "no credentials"
    );

    // SIGHUP reads the variables again, and the htpasswd file they name.
    std::fs::write(&users, "newuser:{SHA}bFWAPW8dehd6DbPrSzQ7DVD5wRE=\n").unwrap();
    gateway.signal(Signal::SIGHUP);
    gateway.log_matching(|line| line["message"] == "config reloaded");
    let as_user = |user: &str, password: &str| {
        let response = client
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .unwrap();
        response.status().as_u16()
    };
    assert_eq!(as_user("gihyo", "gihyo"), 401, "the old user is gone");
    assert_eq!(as_user("newuser", "newpass"), 200);
}

/// Ten reloads under a steady load, each with another set of upstream servers, by SIGHUP and by
/// `flotilla gateway --reload` in turn: no request fails. A bad config is refused by `--reload`
/// with the error, and the running config is kept.
#[test]
fn ten_reloads_with_changing_upstreams_under_load_lose_no_request() {
    let ports = [free_port(), free_port(), free_port()];
    let _backends = [
        echo("a", ports[0]),
        echo("b", ports[1]),
        echo("c", ports[2]),
    ];
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let path = path.to_str().unwrap().to_string();
    let config = |servers: &[u16]| {
        let servers: Vec<String> = servers
            .iter()
            .map(|p| format!("{{ address = \"127.0.0.1:{p}\" }}"))
            .collect();
        format!(
            "[admin]\nbind = \"127.0.0.1:{admin}\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
             [[route]]\nupstream = \"app\"\n[upstream.app]\nserver = [{}]\n",
            servers.join(", ")
        )
    };
    std::fs::write(&path, config(&ports[..2])).unwrap();
    let admin_env = format!("127.0.0.1:{admin}");
    let gateway = start(
        "gateway",
        &["--config", &path],
        &[("GATEWAY_ADMIN_BIND", &admin_env)],
    );
    let load = Load::start(gateway.url("/"), 4);
    let sets: [&[u16]; 10] = [
        &[ports[1], ports[2]],
        &[ports[2]],
        &[ports[0], ports[2]],
        &[ports[0]],
        &ports,
        &[ports[1]],
        &[ports[0], ports[1]],
        &[ports[2], ports[0]],
        &[ports[1], ports[2]],
        &ports,
    ];
    for (i, set) in sets.iter().enumerate() {
        std::fs::write(&path, config(set)).unwrap();
        if i % 2 == 0 {
            gateway.signal(Signal::SIGHUP);
        } else {
            let out = run_to_end(&["gateway", "--config", &path, "--reload"], &[]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("config reloaded"), "{stdout}");
        }
        gateway.log_matching(|line| line["message"] == "config reloaded");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 500, "only {ok} requests");

    // A config with an error: `--reload` reads it first, says where the error is and exits 2;
    // asked directly, the admin listener answers 422 and the gateway keeps its running config.
    std::fs::write(&path, format!("{}[upstream.app.oops]\n", config(&ports))).unwrap();
    let out = run_to_end(&["gateway", "--config", &path, "--reload"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gateway.toml:"), "{stderr}");
    let refused = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{admin}/reload"))
        .header("x-flotilla-admin", "1")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 422);
    let message = refused.text().unwrap();
    assert!(message.contains("the running one is kept"), "{message}");
    assert!(
        reqwest::blocking::get(gateway.url("/"))
            .unwrap()
            .status()
            .is_success(),
        "still serving"
    );
}
