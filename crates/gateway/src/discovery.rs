//! Host names in server addresses, looked up by the gateway itself.
//!
//! Every address a name resolves to becomes a server of its own (as nginx does at startup), and
//! names are looked up again every `resolve_interval`, so a pool follows DNS: on Docker Swarm,
//! `tasks.<service>:port` gives one server per running task, and `docker service scale` or a
//! rolling update changes the pool within seconds, without a restart or a reload.
//!
//! A lookup that fails (no answer in time, no such name) keeps the addresses last seen for that
//! name: a DNS hiccup must not empty a pool. A name never resolved has no servers yet; requests
//! to a pool without servers get a 503 naming it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use crate::config::{self, FileConfig, SERVICE_PLACEHOLDER};
use crate::load::Loaded;

/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// For each configured address whose host is a name: the socket addresses it resolved to.
/// Addresses with an IP literal are not in it.
pub(crate) type Resolved = BTreeMap<String, Vec<SocketAddr>>;

/// The key under which the UP instances of a registry's app are in [`Resolved`], for an
/// upstream's `discovery = "registry:app"` (app names are case-insensitive).
pub(crate) fn registry_key(discovery: &str) -> String {
    let app = discovery
        .strip_prefix(crate::validate::REGISTRY_PREFIX)
        .unwrap_or(discovery);
    format!(
        "{}{}",
        crate::validate::REGISTRY_PREFIX,
        app.to_ascii_uppercase()
    )
}

/// Adds the registry's instances to `resolved`, under [`registry_key`]s.
pub(crate) fn with_registry(
    mut resolved: Resolved,
    instances: &platform::registration::watch::Instances,
) -> Resolved {
    resolved.retain(|key, _| !key.starts_with(crate::validate::REGISTRY_PREFIX));
    for (app, addresses) in instances {
        resolved.insert(registry_key(app), addresses.clone());
    }
    resolved
}

/// `loaded`, with a route and an upstream for every app in the registry under each
/// `/{service}/` route: `/api/{service}/` becomes `/api/story-service/` (prefix stripped, the
/// template route's other settings kept) to upstream `registry:STORY-SERVICE`.
pub(crate) fn expand_services(loaded: &Loaded, resolved: &Resolved) -> Loaded {
    let prefix = crate::validate::REGISTRY_PREFIX;
    let apps: Vec<&str> = resolved
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .collect();
    let mut expanded = loaded.clone();
    for (index, route) in loaded.file.routes.iter().enumerate() {
        let Some(path) = route.path.get_ref().strip_suffix(SERVICE_PLACEHOLDER) else {
            continue;
        };
        for app in &apps {
            let name = format!("{prefix}{app}");
            expanded
                .file
                .upstreams
                .entry(name.clone())
                .or_insert_with(|| config::Upstream {
                    discovery: Some(Spanned::new(0..0, name.clone())),
                    ..config::Upstream::default()
                });
            let mut service = route.clone();
            service.path = Spanned::new(0..0, format!("{path}{}/", app.to_ascii_lowercase()));
            service.upstream = Some(Spanned::new(0..0, name));
            service.strip_prefix = true;
            expanded.file.routes.push(service);
            expanded.opened.push(loaded.opened[index].clone());
        }
    }
    expanded
}

/// The configured addresses whose host is a name rather than an IP address.
fn names(file: &FileConfig) -> impl Iterator<Item = &str> {
    file.upstreams
        .values()
        .flat_map(|u| &u.server)
        .map(|s| s.address.get_ref().as_str())
        .filter(|address| address.parse::<SocketAddr>().is_err())
}

/// How often to look names up again: the shortest `resolve_interval` of the upstreams that have
/// names; `None` when there is nothing to look up again.
pub(crate) fn interval(file: &FileConfig) -> Option<Duration> {
    file.upstreams
        .values()
        .filter(|u| {
            u.server
                .iter()
                .any(|s| s.address.get_ref().parse::<SocketAddr>().is_err())
        })
        .map(|u| u.resolve_interval.0)
        .filter(|interval| !interval.is_zero())
        .min()
}

/// Looks up every name in `file`; a name whose lookup fails keeps its entry from `previous`
/// (or none at all, if it never resolved).
pub(crate) async fn resolve(file: &FileConfig, previous: &Resolved) -> Resolved {
    let mut unique: Vec<&str> = names(file).collect();
    unique.sort_unstable();
    unique.dedup();
    let lookups = unique.into_iter().map(|address| async move {
        let outcome =
            match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(address)).await {
                Ok(Ok(found)) => {
                    let mut found: Vec<SocketAddr> = found.collect();
                    found.sort_unstable();
                    found.dedup();
                    if found.is_empty() {
                        Err("no addresses".to_string())
                    } else {
                        Ok(found)
                    }
                }
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
            };
        (address, outcome)
    });
    let mut resolved = Resolved::new();
    for (address, outcome) in futures_util::future::join_all(lookups).await {
        match outcome {
            Ok(found) => {
                if previous.get(address) != Some(&found) {
                    tracing::info!(name = address, addresses = ?found, "server name resolved");
                }
                resolved.insert(address.to_string(), found);
            }
            Err(error) => {
                let kept = previous.get(address).cloned().unwrap_or_default();
                tracing::warn!(name = address, %error, kept = ?kept,
                    "cannot resolve server name; keeping the addresses last seen");
                resolved.insert(address.to_string(), kept);
            }
        }
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(servers: &str, interval: &str) -> FileConfig {
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\npath = \"/\"\nupstream = \"a\"\n\
             [upstream.a]\nresolve_interval = \"{interval}\"\nserver = [{servers}]\n"
        );
        crate::config::parse("test.toml", &text, &platform::Source::default()).unwrap()
    }

    #[tokio::test]
    async fn names_resolve_to_every_address_and_literals_are_left_alone() {
        let file = file(
            r#"{address = "localhost:8080"}, {address = "127.0.0.9:1"}"#,
            "5s",
        );
        assert_eq!(interval(&file), Some(Duration::from_secs(5)));
        let resolved = resolve(&file, &Resolved::new()).await;
        assert_eq!(resolved.len(), 1, "{resolved:?}");
        let local = &resolved["localhost:8080"];
        assert!(!local.is_empty());
        assert!(
            local
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080)
        );
    }

    #[tokio::test]
    async fn a_failed_lookup_keeps_what_was_seen_before() {
        let file = file(r#"{address = "no-such-host.invalid:80"}"#, "1s");
        let seen: SocketAddr = "127.0.0.3:80".parse().unwrap();
        let previous = Resolved::from([("no-such-host.invalid:80".to_string(), vec![seen])]);
        let resolved = resolve(&file, &previous).await;
        assert_eq!(resolved["no-such-host.invalid:80"], vec![seen]);
        let never = resolve(&file, &Resolved::new()).await;
        assert_eq!(never["no-such-host.invalid:80"], Vec::<SocketAddr>::new());
    }

    #[test]
    fn only_literal_addresses_need_no_lookups() {
        let file = file(r#"{address = "127.0.0.1:1"}, {address = "[::1]:2"}"#, "5s");
        assert_eq!(interval(&file), None);
        let zero = self::file(r#"{address = "localhost:1"}"#, "0s");
        assert_eq!(interval(&zero), None);
    }
}
