//! Keeping the routes and pools current: a reload (SIGHUP, `POST /reload`) reads the config
//! again and swaps in its routes, pools and listeners; a change in what server names resolve to
//! rebuilds the pools.

use std::io;
use std::sync::Arc;

use platform::Source;
use platform::registration::watch::Instances;
use tokio::sync::watch;

use crate::config::FileConfig;
use crate::listeners::Listeners;
use crate::load::Loaded;
use crate::routing::{LiveRoutes, RouteTable};
use crate::upstream::Upstream;
use crate::{discovery, env_mode, health_check, status};

/// The routes and upstream pools in force, what they were built from, and their health checks.
/// A reload or a change in DNS builds the next one; requests in flight finish on the pools they
/// started with.
pub(crate) struct Pools {
    loaded: Loaded,
    resolved: discovery::Resolved,
    upstreams: Vec<Arc<Upstream>>,
    /// Dropping it stops this generation's health checks.
    health_stop: Option<watch::Sender<bool>>,
}

impl Pools {
    /// Builds the pools for `loaded`, taking over server state from `previous`, and puts them in
    /// force. Health checks start with [`Pools::start_health_checks`].
    pub(crate) fn install(
        live: &LiveRoutes,
        loaded: Loaded,
        resolved: discovery::Resolved,
        previous: &[Arc<Upstream>],
    ) -> Self {
        let expanded = discovery::expand_services(&loaded, &resolved);
        let upstreams: Vec<Arc<Upstream>> = expanded
            .file
            .upstreams
            .iter()
            .map(|(name, upstream)| {
                let before = previous.iter().find(|u| &*u.name == name);
                Arc::new(Upstream::new(
                    name,
                    upstream,
                    &resolved,
                    before.map(|u| &**u),
                ))
            })
            .collect();
        live.replace(RouteTable::new(&expanded, &upstreams));
        Pools {
            loaded,
            resolved,
            upstreams,
            health_stop: None,
        }
    }

    pub(crate) fn start_health_checks(&mut self) {
        let (tx, rx) = watch::channel(false);
        for upstream in &self.upstreams {
            tokio::spawn(health_check::run(Arc::clone(upstream), rx.clone()));
        }
        self.health_stop = Some(tx);
    }

    fn server_count(&self) -> usize {
        self.upstreams.iter().map(|u| u.servers.len()).sum()
    }
}

/// Keeps the pools and listeners current until `stop`, then drains the listeners.
///
/// SIGHUP (or the admin listener's `POST /reload`) reads the config again (the file, or in env
/// mode the variables, and the files they name: htpasswd files, certificates) and puts it in
/// force at once: routes and upstreams are swapped, listeners added and removed. A config with
/// errors, or a new listener that cannot be bound, is reported and the running config kept.
/// Names in server addresses are looked up again every `resolve_interval`, and the registry
/// (when there is one) followed, rebuilding the pools when an answer changes.
pub(crate) async fn maintain(
    mut pools: Pools,
    mut listeners: Listeners,
    reload_from: Option<Source>,
    mut hangups: Option<tokio::signal::unix::Signal>,
    mut reloads: tokio::sync::mpsc::Receiver<status::ReloadReply>,
    mut registry: Option<watch::Receiver<Instances>>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let live = Arc::clone(&listeners.shared.live);
    let mut gauges = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut ticks: u64 = 0;
    let next_lookup = |file: &FileConfig| {
        discovery::interval(file).map(|interval| tokio::time::Instant::now() + interval)
    };
    let mut lookup_at = next_lookup(&pools.loaded.file);
    loop {
        let trigger = tokio::select! {
            _ = gauges.tick() => {
                status::update_gauges(&live);
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    // Off the request path: rate limiters forget clients back at their burst.
                    live.current().sweep_rate_limits();
                }
                continue;
            }
            Some(()) = async { hangups.as_mut()?.recv().await } => Trigger::Signal,
            Some(reply) = reloads.recv() => Trigger::Admin(reply),
            Some(Ok(())) = async { Some(registry.as_mut()?.changed().await) } => Trigger::Lookup,
            () = tokio::time::sleep_until(lookup_at.unwrap_or_else(tokio::time::Instant::now)), if lookup_at.is_some() => {
                lookup_at = next_lookup(&pools.loaded.file);
                Trigger::Lookup
            }
            failed = listeners.ended() => return failed,
            _ = stop.wait_for(|s| *s) => break,
        };
        let reload = !matches!(trigger, Trigger::Lookup);
        let (loaded, added) = if reload {
            let read = match &reload_from {
                None => Err("this gateway has no config source to read again".to_string()),
                Some(source) => env_mode::load(source).map_err(|e| e.to_string()),
            };
            let prepared = match read {
                Ok(loaded) => listeners
                    .prepare(&loaded.file)
                    .await
                    .map(|added| (loaded, added)),
                Err(error) => Err(error),
            };
            match prepared {
                Ok(prepared) => prepared,
                Err(error) => {
                    tracing::error!(%error, "config reload failed; keeping the running config");
                    trigger.answer(Err(error));
                    continue;
                }
            }
        } else {
            (pools.loaded.clone(), Vec::new())
        };
        let resolved = discovery::resolve(&loaded.file, &pools.resolved).await;
        let resolved = match &registry {
            Some(instances) => discovery::with_registry(resolved, &instances.borrow()),
            None => resolved,
        };
        if !reload && resolved == pools.resolved {
            continue;
        }
        let listener_changes = listeners.apply(&loaded.file, added);
        let previous = std::mem::take(&mut pools.upstreams);
        pools = Pools::install(&live, loaded, resolved, &previous);
        pools.start_health_checks();
        lookup_at = next_lookup(&pools.loaded.file);
        let (upstreams, servers) = (pools.upstreams.len(), pools.server_count());
        if reload {
            tracing::info!(upstreams, servers, listeners = %listener_changes, "config reloaded");
            let listener_changes = if listener_changes.is_empty() {
                String::new()
            } else {
                format!(", listeners {listener_changes}")
            };
            trigger.answer(Ok(format!(
                "config reloaded: {upstreams} upstreams, {servers} servers{listener_changes}"
            )));
        } else {
            tracing::info!(
                upstreams,
                servers,
                "server addresses changed; pools rebuilt"
            );
        }
    }
    listeners.drained().await
}

/// What made [`maintain`] act.
enum Trigger {
    Signal,
    /// `POST /reload` on the admin listener, waiting for the outcome.
    Admin(status::ReloadReply),
    Lookup,
}

impl Trigger {
    fn answer(self, outcome: Result<String, String>) {
        if let Trigger::Admin(reply) = self {
            let _ = reply.send(outcome);
        }
    }
}
