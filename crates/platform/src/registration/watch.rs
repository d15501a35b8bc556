//! Following a registry: the UP instances of every app, kept current through Flotilla's watch
//! (`GET apps?version=N&wait=S`, answered as soon as the registry changes), so a registration or
//! a cancel reaches the follower within a request's time, not Eureka's 30–90 s of polling.
//!
//! Several registry URLs are tried in turn. While no registry answers, the last instances seen
//! are kept: a registry outage must not empty the pools that route to them. Against a plain
//! Eureka, which ignores `version` and `wait`, the same loop still works as a poll every
//! [`POLL_FLOOR`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

/// App name (upper case) → addresses of its UP instances, sorted.
pub type Instances = BTreeMap<String, Vec<SocketAddr>>;

/// How long the registry may hold one watch request.
const WAIT: Duration = Duration::from_secs(25);
/// A watch that returns sooner than this with nothing new (a registry that does not hold
/// requests) is followed by a pause, so the loop never spins.
const POLL_FLOOR: Duration = Duration::from_secs(1);

/// The UP instances in an applications document (JSON), and its version.
pub fn parse_document(document: &Value) -> (u64, Instances) {
    let version = match &document["applications"]["versions__delta"] {
        Value::String(text) => text.parse().unwrap_or(0),
        Value::Number(number) => number.as_u64().unwrap_or(0),
        _ => 0,
    };
    let as_list = |v: &Value| match v {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    };
    let mut instances = Instances::new();
    for app in as_list(&document["applications"]["application"]) {
        let Some(name) = app["name"].as_str() else {
            continue;
        };
        let mut addresses: Vec<SocketAddr> = as_list(&app["instance"])
            .iter()
            .filter(|i| i["status"] == "UP")
            .filter_map(|i| {
                let ip = i["ipAddr"].as_str()?.parse().ok()?;
                let port = match &i["port"] {
                    Value::Object(port) => number(port.get("$")?)?,
                    other => number(other)?,
                };
                Some(SocketAddr::new(ip, port))
            })
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        if !addresses.is_empty() {
            instances.insert(name.to_ascii_uppercase(), addresses);
        }
    }
    (version, instances)
}

fn number(value: &Value) -> Option<u16> {
    match value {
        Value::Number(n) => u16::try_from(n.as_u64()?).ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Follows the registries at `urls` (each ending in `/eureka/` or similar), publishing every
/// change on `instances`, until every receiver is gone.
pub async fn follow(urls: Vec<String>, instances: watch::Sender<Instances>) {
    let client = reqwest::Client::builder()
        .timeout(WAIT + Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut version: Option<u64> = None;
    let mut index = 0;
    let mut failing = false;
    while !instances.is_closed() && !urls.is_empty() {
        let base = &urls[index % urls.len()];
        let url = match version {
            Some(version) => format!("{base}apps/?version={version}&wait={}", WAIT.as_secs()),
            None => format!("{base}apps/"),
        };
        let asked = Instant::now();
        let answer = client
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let document = match answer {
            Ok(response) if response.status().is_success() => response.json::<Value>().await.ok(),
            _ => None,
        };
        let Some(document) = document else {
            if !failing {
                tracing::warn!(
                    registry = base,
                    "registry does not answer; keeping the instances last seen"
                );
                failing = true;
            }
            index += 1;
            version = None;
            tokio::time::sleep(POLL_FLOOR).await;
            continue;
        };
        if failing {
            tracing::info!(registry = base, "registry answers again");
            failing = false;
        }
        let (seen, found) = parse_document(&document);
        instances.send_if_modified(|current| {
            if *current == found {
                false
            } else {
                *current = found;
                true
            }
        });
        if version == Some(seen) && asked.elapsed() < POLL_FLOOR {
            tokio::time::sleep(POLL_FLOOR - asked.elapsed()).await;
        }
        version = Some(seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_instances_are_read_with_either_port_form() {
        let document = serde_json::json!({"applications": {"versions__delta": "7", "application": [
            {"name": "story", "instance": [
                {"status": "UP", "ipAddr": "10.0.9.5", "port": {"$": 8080, "@enabled": "true"}},
                {"status": "OUT_OF_SERVICE", "ipAddr": "10.0.9.6", "port": 8080},
                {"status": "UP", "ipAddr": "10.0.9.7", "port": "8081"},
                {"status": "UP", "ipAddr": "not an ip", "port": 1}
            ]},
            {"name": "DOWNONLY", "instance": {"status": "DOWN", "ipAddr": "10.0.0.1", "port": 1}}
        ]}});
        let (version, instances) = parse_document(&document);
        assert_eq!(version, 7);
        let story: Vec<String> = instances["STORY"].iter().map(|a| a.to_string()).collect();
        assert_eq!(story, ["10.0.9.5:8080", "10.0.9.7:8081"]);
        assert!(!instances.contains_key("DOWNONLY"));
    }
}
