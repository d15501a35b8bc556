//! Seed 004's bug cannot happen: a service in a network namespace shaped like a Docker Swarm task
//! (`eth0` on the ingress network, `eth1` on the app overlay, `eth2` on `docker_gwbridge`)
//! registers its overlay address, which the registry's side of the overlay can reach.
//!
//! The namespace and its interfaces (veth pairs) are made by the test and removed when it ends.
//! Needs root and `ip` with network namespaces; elsewhere the test says why and passes without
//! running (as the Swarm end-to-end test is skipped without a Docker engine).

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::helpers::{BIN, Running, spawn, start_on};

/// The overlay: the host's side of the veth pair is `.1` (where the registry listens), the task's
/// `eth1` is `.7`. Chosen away from Docker's defaults so nothing on the machine uses it.
const OVERLAY: &str = "10.0.77.0/24";
const HOST_OVERLAY: &str = "10.0.77.1";
const TASK_OVERLAY: &str = "10.0.77.7";
/// Swarm's ingress network and docker_gwbridge addresses, as a task has them.
const TASK_INGRESS: &str = "10.255.0.7";
const TASK_GWBRIDGE: &str = "172.18.0.7";
/// The service's port inside the namespace (its own port space: always free).
const PORT: u16 = 18090;

struct Task {
    ip: String,
    namespace: String,
    host_link: String,
}

impl Task {
    /// Makes the namespace, or says why it cannot (and the test does not run).
    fn create() -> Result<Task, String> {
        let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or("no `ip` command (iproute2)")?
            .to_string();
        let id = std::process::id();
        let task = Task {
            ip,
            namespace: format!("flotilla-task-{id}"),
            host_link: format!("flo{}", id % 1_000_000),
        };
        task.ip(&["netns", "add", &task.namespace])?;
        // From here on, Drop removes the namespace (and with it every veth pair).
        let ns = task.namespace.as_str();
        let host = task.host_link.as_str();
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns, task.ip.as_str()];
            all.extend_from_slice(args);
            task.ip(&all)
        };
        in_ns(&["link", "set", "lo", "up"])?;
        // eth0: the ingress network, first, as Swarm attaches it.
        in_ns(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "ingress0",
        ])?;
        in_ns(&["addr", "add", &format!("{TASK_INGRESS}/16"), "dev", "eth0"])?;
        // eth1: the overlay, its other end on the host (the "other node" the registry is on).
        task.ip(&[
            "link", "add", host, "type", "veth", "peer", "name", "eth1", "netns", ns,
        ])?;
        task.ip(&["addr", "add", &format!("{HOST_OVERLAY}/24"), "dev", host])?;
        task.ip(&["link", "set", host, "up"])?;
        in_ns(&["addr", "add", &format!("{TASK_OVERLAY}/24"), "dev", "eth1"])?;
        // eth2: docker_gwbridge, reachable from nowhere but its own node.
        in_ns(&[
            "link",
            "add",
            "eth2",
            "type",
            "veth",
            "peer",
            "name",
            "gwbridge0",
        ])?;
        in_ns(&["addr", "add", &format!("{TASK_GWBRIDGE}/16"), "dev", "eth2"])?;
        for link in ["eth0", "ingress0", "eth1", "eth2", "gwbridge0"] {
            in_ns(&["link", "set", link, "up"])?;
        }
        Ok(task)
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new(&self.ip)
            .args(args)
            .output()
            .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// `flotilla echo` inside the namespace, bound to every address (so nothing but the
    /// advertise rules chooses), registering with `registry`.
    fn echo(&self, registry: &str, extra: &[(&str, &str)]) -> Command {
        let mut command = Command::new(&self.ip);
        command
            .args(["netns", "exec", &self.namespace, BIN, "echo"])
            .args(["--bind", &format!("0.0.0.0:{PORT}")])
            .env_clear()
            .env("LOG_FORMAT", "json")
            .env("HOSTNAME", "story-task")
            .env("FLOTILLA_REGISTRY_URL", registry)
            .env("FLOTILLA_APP_NAME", "story")
            .env("FLOTILLA_REGISTRY_RENEWAL", "1s")
            .envs(extra.iter().copied());
        command
    }

    /// The addresses `ip` lists for `link` inside the namespace.
    fn addresses_of(&self, link: &str) -> String {
        let out = Command::new(&self.ip)
            .args(["netns", "exec", &self.namespace, &self.ip])
            .args(["-4", "-o", "addr", "show", "dev", link])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let _ = self.ip(&["netns", "del", &self.namespace]);
        // Normally gone with its peer; removed here in case the namespace was never populated.
        let _ = self.ip(&["link", "del", &self.host_link]);
    }
}

/// The STORY instances the registry lists, as (ipAddr, status).
fn story_instances(registry: &Running) -> Vec<(String, String)> {
    let answer = reqwest::blocking::Client::new()
        .get(registry.url("/eureka/apps/STORY"))
        .header("accept", "application/json")
        .send()
        .unwrap();
    if answer.status() == 404 {
        return Vec::new();
    }
    let app: Value = answer.json().unwrap();
    app["application"]["instance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["ipAddr"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "not within 15 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `flotilla echo` in the task with `extra` settings and returns the address it registered;
/// when that is the overlay one, checks the registry's side reaches the service there. Stops it
/// with SIGTERM: it deregisters.
fn registered_address(task: &Task, registry: &Running, extra: &[(&str, &str)]) -> String {
    let url = registry.url("/eureka/");
    let mut echo = spawn(task.echo(&url, extra), None);
    wait_for("the service registers", || {
        story_instances(registry).len() == 1
    });
    let (address, status) = story_instances(registry).remove(0);
    assert_eq!(status, "UP");
    if address == TASK_OVERLAY {
        let reached = reqwest::blocking::get(format!("http://{TASK_OVERLAY}:{PORT}/")).unwrap();
        assert_eq!(reached.status(), 200, "the registered address is reachable");
    }
    eprintln!("{extra:?}: registered {address}");
    echo.signal(Signal::SIGTERM);
    assert!(echo.wait_exit(Duration::from_secs(20)).success());
    wait_for("the service deregisters", || {
        story_instances(registry).is_empty()
    });
    address
}

#[test]
fn a_task_on_the_ingress_network_and_an_overlay_registers_its_overlay_address() {
    let task = match Task::create() {
        Ok(task) => task,
        Err(why) => {
            eprintln!("skipped: cannot make a network namespace here: {why}");
            return;
        }
    };
    // The naive choices of seed 004 (the first interface, `eth0`) are the ingress address.
    assert!(task.addresses_of("eth0").contains(TASK_INGRESS));
    let registry = start_on("registry", &format!("{HOST_OVERLAY}:0"), &[], &[]);

    // By network, as the stacks do, and by interface name: the overlay address, and the
    // registry's side of the overlay reaches the service there.
    for setting in [OVERLAY, "eth1"] {
        let chosen =
            registered_address(&task, &registry, &[("FLOTILLA_ADVERTISE_NETWORK", setting)]);
        assert_eq!(chosen, TASK_OVERLAY, "FLOTILLA_ADVERTISE_NETWORK={setting}");
    }

    // With no setting, the rules still never pick the ingress address.
    let chosen = registered_address(&task, &registry, &[]);
    assert_ne!(chosen, TASK_INGRESS);
    assert!([TASK_OVERLAY, TASK_GWBRIDGE].contains(&chosen.as_str()));

    // A network the task is not on: it refuses to start and names the addresses it has.
    let out = task
        .echo(
            &registry.url("/eureka/"),
            &[("FLOTILLA_ADVERTISE_NETWORK", "10.0.99.0/24")],
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for named in ["10.0.99.0/24", TASK_INGRESS, TASK_OVERLAY, TASK_GWBRIDGE] {
        assert!(stderr.contains(named), "{named} not in: {stderr}");
    }
    assert!(story_instances(&registry).is_empty());
}
