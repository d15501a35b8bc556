//! MariaDB clusters for tests, started through the project's own script
//! (`scripts/db/mariadb.sh`, which installs Debian's mariadb-server when it is missing).
//!
//! Most tests share one cluster, started by the first test process that needs it (the script
//! serialises concurrent starts) and stopped by `scripts/test.sh`; each such test works in a
//! database of its own. Tests that stop nodes get a cluster of their own, removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::mysql::MySqlPool;
use tokio::sync::OnceCell;

/// Credentials the script sets up (the seeds'): tests use root, which may create databases.
const ROOT: &str = "root:gihyo";

pub(crate) struct Cluster {
    dir: PathBuf,
    pub(crate) primary_port: u16,
    pub(crate) replica_ports: Vec<u16>,
    owned: bool,
    _tmp: Option<tempfile::TempDir>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/db/mariadb.sh")
}

/// Where the shared cluster lives; `scripts/test.sh` stops it after the tests.
pub(crate) fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("flotilla-test-mariadb")
}

fn run_script(args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("run mariadb.sh");
    assert!(
        output.status.success(),
        "mariadb.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn port_of(url: &str) -> u16 {
    let after_at = url.rsplit_once('@').unwrap().1;
    after_at.split(['/', ':']).nth(1).unwrap().parse().unwrap()
}

impl Cluster {
    fn up(dir: &Path, replicas: usize, owned: bool, tmp: Option<tempfile::TempDir>) -> Cluster {
        let out = run_script(&[
            "up",
            "--replicas",
            &replicas.to_string(),
            "--dir",
            dir.to_str().unwrap(),
        ]);
        let ports: Vec<u16> = out.lines().map(port_of).collect();
        assert_eq!(ports.len(), replicas + 1, "one URL per node: {out}");
        Cluster {
            dir: dir.to_path_buf(),
            primary_port: ports[0],
            replica_ports: ports[1..].to_vec(),
            owned,
            _tmp: tmp,
        }
    }

    /// The cluster most tests share: a primary and one replica.
    pub(crate) async fn shared() -> &'static Cluster {
        static SHARED: OnceCell<Cluster> = OnceCell::const_new();
        SHARED
            .get_or_init(|| async {
                tokio::task::spawn_blocking(|| Cluster::up(&shared_dir(), 1, false, None))
                    .await
                    .unwrap()
            })
            .await
    }
}

#[allow(dead_code, reason = "only the replication tests stop and start nodes")]
impl Cluster {
    /// A cluster for one test, which may stop and start its nodes.
    pub(crate) async fn dedicated(replicas: usize) -> Cluster {
        tokio::task::spawn_blocking(move || {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("cluster");
            Cluster::up(&dir, replicas, true, Some(tmp))
        })
        .await
        .unwrap()
    }

    /// `mysql://root:...@127.0.0.1:PORT/DATABASE`
    pub(crate) fn url(&self, port: u16, database: &str) -> String {
        format!("mysql://{ROOT}@127.0.0.1:{port}/{database}")
    }

    /// A root connection pool to one node, without a default database.
    pub(crate) async fn admin(&self, port: u16) -> MySqlPool {
        MySqlPool::connect(&format!("mysql://{ROOT}@127.0.0.1:{port}/mysql"))
            .await
            .expect("admin connection")
    }

    /// A new, empty database on the primary (replicated to the replicas).
    pub(crate) async fn create_database(&self) -> String {
        let name = format!("t_{}", uuid_like());
        let admin = self.admin(self.primary_port).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        name
    }

    /// Stops a node (`primary`, `replica1`, ...), keeping its data.
    pub(crate) async fn stop(&self, node: &str) {
        let (dir, node) = (self.dir.clone(), node.to_string());
        tokio::task::spawn_blocking(move || {
            run_script(&["stop", &node, "--dir", dir.to_str().unwrap()])
        })
        .await
        .unwrap();
    }

    /// Kills a node's server and its supervising script with SIGKILL, as a crash would: no
    /// shutdown, no flush beyond what each commit already did.
    pub(crate) fn kill(&self, node: &str) {
        let pid = std::fs::read_to_string(self.dir.join(node).join("node.pid")).unwrap();
        // The script runs in a session of its own (setsid): its process group is the node.
        let status = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", pid.trim())])
            .status()
            .unwrap();
        assert!(status.success(), "kill {node}");
        // Gone only once the server has exited and released its files and port.
        let server = std::fs::read_to_string(self.dir.join(node).join("run/mariadb.pid")).unwrap();
        for _ in 0..200 {
            let alive = Command::new("kill")
                .args(["-0", server.trim()])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success();
            if !alive {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{node}'s server did not exit within 10 s of SIGKILL");
    }

    /// Starts a stopped node again and waits until it answers.
    pub(crate) async fn start(&self, node: &str) {
        let (dir, node) = (self.dir.clone(), node.to_string());
        tokio::task::spawn_blocking(move || {
            run_script(&["start", &node, "--dir", dir.to_str().unwrap()])
        })
        .await
        .unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("bash")
                .arg(script())
                .args(["down", "--dir", self.dir.to_str().unwrap()])
                .output();
        }
    }
}

/// 16 hex digits, unique enough for database names in one test run.
fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}
