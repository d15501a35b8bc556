//! Runs replicas as child processes of the same binary: collects their logs with a prefix,
//! restarts one that exits unexpectedly (with backoff, and not at all once it keeps crashing),
//! and stops them gracefully (SIGTERM, then SIGKILL after a grace period).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use crate::plan::Service;

/// Restarts allowed within [`CRASH_WINDOW`] before a replica is reported as crashing and left down.
const MAX_RESTARTS: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// How long a stopping replica may drain before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// One row of the status table.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ReplicaStatus {
    pub(crate) id: u64,
    pub(crate) service: Service,
    pub(crate) replica: usize,
    pub(crate) pid: Option<u32>,
    pub(crate) address: String,
    pub(crate) state: &'static str,
    pub(crate) restarts: u32,
}

struct Replica {
    status: ReplicaStatus,
    args: Vec<String>,
    /// The URL that answers 2xx once the replica can take traffic.
    probe: String,
    /// Set when the supervisor itself stops the replica: its exit is not a crash.
    stopping: bool,
    /// Sends the exit of the replica's last process (true once it will not restart).
    finished: watch::Sender<bool>,
}

/// Every replica, shared by the monitors, the control endpoint and the status display.
#[derive(Clone)]
pub(crate) struct Supervisor {
    plain: bool,
    inner: Arc<Mutex<Inner>>,
    binary: PathBuf,
    changed: Arc<watch::Sender<u64>>,
}

struct Inner {
    replicas: Vec<Replica>,
    next_id: u64,
}

impl Supervisor {
    /// `plain`: print a line per change (when standard output is not a terminal).
    pub(crate) fn new(binary: PathBuf, plain: bool) -> Self {
        Supervisor {
            plain,
            inner: Arc::new(Mutex::new(Inner {
                replicas: Vec::new(),
                next_id: 1,
            })),
            binary,
            changed: Arc::new(watch::channel(0).0),
        }
    }

    /// Notified on every state change, for the status display.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Replica)) {
        let status = {
            let mut inner = self.lock();
            inner
                .replicas
                .iter_mut()
                .find(|r| r.status.id == id)
                .map(|replica| {
                    change(replica);
                    replica.status.clone()
                })
        };
        if let Some(status) = status {
            self.announce(&status);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Without a terminal, every change is one plain line, printed as it happens (on a terminal
    /// the table shows it instead).
    fn announce(&self, status: &ReplicaStatus) {
        if self.plain {
            println!(
                "flotilla up: {}.{} {} pid={} address={} restarts={}",
                status.service.name(),
                status.replica,
                status.state,
                status.pid.map_or("-".to_string(), |p| p.to_string()),
                status.address,
                status.restarts
            );
        }
    }

    /// Every replica, in start order of services, then by replica number.
    pub(crate) fn table(&self) -> Vec<ReplicaStatus> {
        let mut rows: Vec<ReplicaStatus> = self
            .lock()
            .replicas
            .iter()
            .map(|r| r.status.clone())
            .collect();
        let rank = |s: Service| Service::ALL.iter().position(|x| *x == s).unwrap_or(0);
        rows.sort_by_key(|r| (rank(r.service), r.replica, r.id));
        rows
    }

    /// Starts a replica and supervises it from then on. Returns its id.
    pub(crate) fn start(
        &self,
        service: Service,
        replica: usize,
        port: u16,
        probe: String,
        args: Vec<String>,
    ) -> u64 {
        let id = {
            let mut inner = self.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            inner.replicas.push(Replica {
                status: ReplicaStatus {
                    id,
                    service,
                    replica,
                    pid: None,
                    address: format!("127.0.0.1:{port}"),
                    state: "starting",
                    restarts: 0,
                },
                args,
                probe,
                stopping: false,
                finished: watch::channel(false).0,
            });
            id
        };
        if let Some(status) = self.status(id) {
            self.announce(&status);
        }
        self.changed.send_modify(|n| *n += 1);
        tokio::spawn(self.clone().monitor(id));
        id
    }

    /// Keeps one replica running until it is stopped or keeps crashing.
    async fn monitor(self, id: u64) {
        let mut crashes: Vec<Instant> = Vec::new();
        let mut backoff = Duration::from_millis(200);
        loop {
            let Some((args, probe, label)) = ({
                let inner = self.lock();
                inner.replicas.iter().find(|r| r.status.id == id).map(|r| {
                    let label = format!("{}.{}", r.status.service.name(), r.status.replica);
                    (r.args.clone(), r.probe.clone(), label)
                })
            }) else {
                return;
            };
            let child = Command::new(&self.binary)
                .args(&args)
                // Its own process group: a Ctrl-C on the terminal reaches only the supervisor,
                // which stops the children in dependency order.
                .process_group(0)
                // It stops when the supervisor dies, however it dies (`child`).
                .env(crate::child::SUPERVISOR_PID, std::process::id().to_string())
                .env("LOG_FORMAT", "text")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(error) => {
                    eprintln!("{label:>16} | cannot start: {error}");
                    self.update(id, |r| r.status.state = "failed");
                    self.finish(id);
                    return;
                }
            };
            let pid = child.id();
            self.update(id, |r| {
                r.status.pid = pid;
                r.status.state = "starting";
            });
            tokio::spawn(self.clone().mark_ready(id, pid, probe));
            if let Some(out) = child.stdout.take() {
                tokio::spawn(prefix_lines(label.clone(), BufReader::new(out)));
            }
            if let Some(err) = child.stderr.take() {
                tokio::spawn(prefix_lines(label.clone(), BufReader::new(err)));
            }
            let status = child.wait().await;
            let stopping = {
                let inner = self.lock();
                inner
                    .replicas
                    .iter()
                    .find(|r| r.status.id == id)
                    .is_none_or(|r| r.stopping)
            };
            if stopping {
                self.update(id, |r| {
                    r.status.state = "stopped";
                    r.status.pid = None;
                });
                self.finish(id);
                return;
            }
            let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            eprintln!("{label:>16} | exited unexpectedly ({how})");
            let now = Instant::now();
            crashes.retain(|t| now.duration_since(*t) < CRASH_WINDOW);
            crashes.push(now);
            if crashes.len() > MAX_RESTARTS {
                eprintln!(
                    "{label:>16} | crashed {} times within {CRASH_WINDOW:?}; not restarting it",
                    crashes.len()
                );
                self.update(id, |r| {
                    r.status.state = "crashing";
                    r.status.pid = None;
                });
                self.finish(id);
                return;
            }
            self.update(id, |r| {
                r.status.state = "restarting";
                r.status.pid = None;
                r.status.restarts += 1;
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Polls the replica's probe until it answers, then marks it ready (unless it has been
    /// replaced by a newer process meanwhile).
    async fn mark_ready(self, id: u64, pid: Option<u32>, probe: String) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client builds");
        for _ in 0..1200 {
            let current = self.status(id);
            if current
                .as_ref()
                .is_none_or(|s| s.pid != pid || s.state != "starting")
            {
                return;
            }
            if client
                .get(&probe)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                self.update(id, |r| {
                    if r.status.pid == pid && r.status.state == "starting" {
                        r.status.state = "ready";
                    }
                });
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn finish(&self, id: u64) {
        let inner = self.lock();
        if let Some(r) = inner.replicas.iter().find(|r| r.status.id == id) {
            r.finished.send_replace(true);
        }
    }

    pub(crate) fn status(&self, id: u64) -> Option<ReplicaStatus> {
        self.lock()
            .replicas
            .iter()
            .find(|r| r.status.id == id)
            .map(|r| r.status.clone())
    }

    /// Stops a replica: SIGTERM, then SIGKILL after the grace period; removes it from the table.
    pub(crate) async fn stop(&self, id: u64, force: bool) {
        let (status, mut finished) = {
            let mut inner = self.lock();
            let Some(replica) = inner.replicas.iter_mut().find(|r| r.status.id == id) else {
                return;
            };
            replica.stopping = true;
            if replica.status.pid.is_some() {
                replica.status.state = "stopping";
            }
            (replica.status.clone(), replica.finished.subscribe())
        };
        self.announce(&status);
        let pid = status.pid;
        self.changed.send_modify(|n| *n += 1);
        if let Some(pid) = pid {
            let signal = if force {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            };
            let _ = kill(Pid::from_raw(pid as i32), signal);
            let done = tokio::time::timeout(STOP_GRACE, finished.wait_for(|f| *f))
                .await
                .is_ok();
            if !done {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                let _ = finished.wait_for(|f| *f).await;
            }
        }
        self.lock().replicas.retain(|r| r.status.id != id);
        if self.plain {
            println!(
                "flotilla up: {}.{} removed",
                status.service.name(),
                status.replica
            );
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// SIGKILL to everything still running (a second Ctrl-C).
    pub(crate) fn kill_all(&self) {
        for replica in self.lock().replicas.iter_mut() {
            replica.stopping = true;
            if let Some(pid) = replica.status.pid {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

async fn prefix_lines<R: tokio::io::AsyncRead + Unpin>(label: String, reader: BufReader<R>) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{label:>16} | {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replica_that_keeps_crashing_is_reported_not_restarted_forever() {
        // `false` exits at once with status 1, whatever its arguments.
        let supervisor = Supervisor::new(PathBuf::from("false"), false);
        let id = supervisor.start(
            Service::TodoApi,
            1,
            1,
            "http://127.0.0.1:1/".into(),
            Vec::new(),
        );
        let mut changes = supervisor.changes();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while supervisor.status(id).is_some_and(|s| s.state != "crashing") {
            assert!(tokio::time::Instant::now() < deadline, "never gave up");
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
        }
        let status = supervisor.status(id).unwrap();
        assert_eq!((status.restarts, status.pid), (MAX_RESTARTS as u32, None));
    }
}
