//! Runs the `flotilla` binary with a clean environment and finds the address it listens on.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_flotilla");

/// A command with only the variables given (so the developer's environment cannot leak in).
pub(crate) fn flotilla(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().envs(env.iter().copied());
    command
}

pub(crate) fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Output {
    flotilla(args, env).output().expect("run flotilla")
}

/// A running service, with its JSON log lines arriving on a channel.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) logs: mpsc::Receiver<Value>,
    /// Lines the process writes to stdout (a gateway's access log with `LOG_STDOUT`).
    pub(crate) stdout: mpsc::Receiver<String>,
}

/// Starts a service on 127.0.0.1:0 with JSON logs and waits for its "listening" line.
pub(crate) fn start(service: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Running {
    start_on(service, "127.0.0.1:0", extra_args, env)
}

/// Starts a service on `bind` with JSON logs and waits for its "listening" line (for a gateway
/// with an admin listener, the line of the listener on `bind`).
pub(crate) fn start_on(
    service: &str,
    bind: &str,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> Running {
    let admin = env
        .iter()
        .find(|(k, _)| *k == "GATEWAY_ADMIN_BIND")
        .map(|(_, v)| v.to_string());
    let mut args = vec![service, "--bind", bind];
    args.extend_from_slice(extra_args);
    let mut env = env.to_vec();
    env.push(("LOG_FORMAT", "json"));
    spawn(flotilla(&args, &env), admin)
}

/// Spawns `command` (a `flotilla` service with JSON logs, possibly behind a wrapper such as
/// `ip netns exec`) and waits for its "listening" line (not the one of the `admin` address).
pub(crate) fn spawn(mut command: Command, admin: Option<String>) -> Running {
    let mut child = command
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn flotilla");
    let logs = forward_json_lines(child.stderr.take().unwrap());
    let stdout = forward_lines(child.stdout.take().unwrap());
    // Owned by `Running` from here on, so a failed wait below still kills the process.
    let mut running = Running {
        child,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        logs,
        stdout,
    };
    let listening = running.log_matching(|line| {
        line["message"] == "listening" && admin.as_deref() != line["address"].as_str()
    });
    running.addr = listening["address"].as_str().unwrap().parse().unwrap();
    running
}

fn forward_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn forward_json_lines(stderr: ChildStderr) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Polls `/ready` until it answers 200.
    pub(crate) fn wait_ready(&self) {
        for _ in 0..500 {
            if reqwest::blocking::get(self.url("/ready")).is_ok_and(|r| r.status() == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("flotilla did not become ready");
    }

    pub(crate) fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("send signal");
    }

    /// Waits for the process to exit, at most `limit`.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "flotilla did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The next log line matching `predicate`, within a few seconds.
    pub(crate) fn log_matching(&self, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .logs
                .recv_timeout(remaining)
                .expect("a matching log line");
            if predicate(&line) {
                return line;
            }
        }
    }
}

/// A loopback port free right now, for a process that must come back on the same address.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
