//! Peer replication, as Eureka's: every operation a client makes on this registry is sent on to
//! the other registries (`REGISTRY_PEERS`), marked with `x-netflix-discovery-replication: true`
//! so they apply it without sending it further. A peer that answers a replicated heartbeat with
//! 404 (it restarted, or missed the registration) is sent the registration.
//!
//! Each peer has a queue and a task of its own, so a slow or dead peer holds back nobody: its
//! queue is bounded, and what does not fit is dropped and counted (the clients' own heartbeats
//! and re-registrations repair it). At startup a registry copies the registry of the first peer
//! that answers, so one that restarts comes back with what the others know.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::instance::{self, Instance, Status};
use crate::registry::{Registry, now_ms};
use crate::render::{self, Format};

/// Eureka's header on requests one registry sends another.
pub const REPLICATION_HEADER: &str = "x-netflix-discovery-replication";
/// Operations waiting for one peer, at most.
const QUEUE: usize = 10_000;
/// How long one replication request may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// An operation to replicate.
#[derive(Debug, Clone)]
pub enum Op {
    Register(Box<Instance>),
    Heartbeat {
        app: String,
        id: String,
        status: Option<Status>,
    },
    Cancel {
        app: String,
        id: String,
    },
    Status {
        app: String,
        id: String,
        status: Status,
    },
    RemoveStatus {
        app: String,
        id: String,
        status: Option<Status>,
    },
    Metadata {
        app: String,
        id: String,
        entries: Vec<(String, String)>,
    },
}

impl Op {
    /// The app and instance id the operation is about.
    pub fn names(&self) -> (&str, &str) {
        match self {
            Op::Register(instance) => (&instance.app, &instance.id),
            Op::Heartbeat { app, id, .. }
            | Op::Cancel { app, id }
            | Op::Status { app, id, .. }
            | Op::RemoveStatus { app, id, .. }
            | Op::Metadata { app, id, .. } => (app, id),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Op::Register(_) => "register",
            Op::Heartbeat { .. } => "heartbeat",
            Op::Cancel { .. } => "cancel",
            Op::Status { .. } => "status",
            Op::RemoveStatus { .. } => "remove_status",
            Op::Metadata { .. } => "metadata",
        }
    }
}

/// The other registries.
pub struct Peers {
    queues: Vec<(String, mpsc::Sender<Op>)>,
}

/// Parses `REGISTRY_PEERS`-style lists: comma-separated `http://host:port/eureka/` URLs.
pub fn parse_urls(value: &str) -> Result<Vec<Url>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let mut url = Url::parse(u).map_err(|e| format!("{u:?} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(format!(
                    "{u:?} must be an http:// or https:// URL with a host"
                ));
            }
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            Ok(url)
        })
        .collect()
}

impl Peers {
    /// No peers: replication does nothing.
    pub fn none() -> Arc<Peers> {
        Arc::new(Peers { queues: Vec::new() })
    }

    /// Starts one sender task per peer.
    pub fn start(urls: Vec<Url>, registry: Arc<Registry>) -> Arc<Peers> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        let queues = urls
            .into_iter()
            .map(|url| {
                let (sender, receiver) = mpsc::channel(QUEUE);
                let peer = Peer {
                    url: url.clone(),
                    client: client.clone(),
                    registry: registry.clone(),
                };
                tokio::spawn(peer.run(receiver));
                (url.to_string(), sender)
            })
            .collect();
        Arc::new(Peers { queues })
    }

    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.queues.iter().map(|(url, _)| url.as_str())
    }

    /// Queues `op` for every peer; a full queue drops it (counted).
    pub fn replicate(&self, op: Op) {
        for (url, queue) in &self.queues {
            if queue.try_send(op.clone()).is_err() {
                metrics::counter!("registry_replication_total", "peer" => url.clone(), "outcome" => "dropped")
                    .increment(1);
            }
        }
    }
}

struct Peer {
    url: Url,
    client: reqwest::Client,
    registry: Arc<Registry>,
}

impl Peer {
    async fn run(self, mut queue: mpsc::Receiver<Op>) {
        let mut reachable = true;
        while let Some(op) = queue.recv().await {
            let outcome = self.send(&op).await;
            let label = match &outcome {
                Ok(_) => "sent",
                Err(_) => "failed",
            };
            metrics::counter!("registry_replication_total", "peer" => self.url.to_string(), "outcome" => label)
                .increment(1);
            match outcome {
                Ok(status) => {
                    if !reachable {
                        tracing::info!(peer = %self.url, "peer registry reachable again");
                        reachable = true;
                    }
                    if status == reqwest::StatusCode::NOT_FOUND
                        && let Op::Heartbeat { app, id, .. } = &op
                        && let Some(instance) = self.registry.instance(app, id)
                    {
                        let _ = self.send(&Op::Register(Box::new(instance))).await;
                    }
                }
                Err(error) if reachable => {
                    tracing::warn!(peer = %self.url, op = op.kind(), %error, "cannot replicate to a peer registry");
                    reachable = false;
                }
                Err(_) => {}
            }
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send(&self, op: &Op) -> Result<reqwest::StatusCode, reqwest::Error> {
        let request = match op {
            Op::Register(instance) => self
                .client
                .post(self.url(&["apps", &instance.app]))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(render::instance(Format::Json, instance)),
            Op::Heartbeat { app, id, status } => {
                let request = self.client.put(self.url(&["apps", app, id]));
                match status {
                    Some(status) => request.query(&[("status", status.as_str())]),
                    None => request,
                }
            }
            Op::Cancel { app, id } => self.client.delete(self.url(&["apps", app, id])),
            Op::Status { app, id, status } => self
                .client
                .put(self.url(&["apps", app, id, "status"]))
                .query(&[("value", status.as_str())]),
            Op::RemoveStatus { app, id, status } => {
                let request = self
                    .client
                    .request(Method::DELETE, self.url(&["apps", app, id, "status"]));
                match status {
                    Some(status) => request.query(&[("value", status.as_str())]),
                    None => request,
                }
            }
            Op::Metadata { app, id, entries } => self
                .client
                .put(self.url(&["apps", app, id, "metadata"]))
                .query(entries),
        };
        let response = request.header(REPLICATION_HEADER, "true").send().await?;
        Ok(response.status())
    }
}

/// Copies the registry of the first peer that answers into `registry` (without replicating it
/// back); returns how many instances it copied.
pub async fn sync(urls: &[Url], registry: &Registry) -> usize {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .unwrap_or_default();
    for url in urls {
        let Ok(apps_url) = url.join("apps") else {
            continue;
        };
        let answer = client
            .get(apps_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let document: Value = match answer {
            Ok(response) if response.status().is_success() => match response.json().await {
                Ok(document) => document,
                Err(_) => continue,
            },
            _ => continue,
        };
        let instances = instances_of(&document);
        let count = instances.len();
        registry.restore(instances);
        tracing::info!(peer = %url, instances = count, "copied the registry of a peer");
        return count;
    }
    0
}

/// The instances of an applications document in JSON; entries that do not read are skipped.
pub fn instances_of(document: &Value) -> Vec<Instance> {
    let now = now_ms();
    let as_list = |v: &Value| match v {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    };
    as_list(&document["applications"]["application"])
        .iter()
        .flat_map(|app| as_list(&app["instance"]))
        .filter_map(|i| {
            i.as_object()
                .and_then(|f| instance::from_fields(f, now).ok())
        })
        .collect()
}
