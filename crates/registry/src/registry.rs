//! The registry's state: instances by app, their leases, the recent changes a delta reports, and
//! a version that moves on every change (what watchers wait on).
//!
//! One mutex guards it: every operation is a few map lookups, far cheaper than the HTTP around
//! it. Rendered full-fetch documents are cached per version and format, so 10,000 instances are
//! serialised once per change, not once per fetch. A heartbeat is not a change (as in Eureka): it
//! renews the lease without moving the version, so cached documents may show a lease renewal up to
//! one change old.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::instance::{Action, Instance, Invalid, MAX_METADATA, Status, check_metadata};
use crate::render::{self, App, Format};

/// How long a change stays in the delta (Eureka's 3 minutes).
pub const DELTA_WINDOW: Duration = Duration::from_secs(180);

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What an operation did, so the caller can answer and replicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// No such instance (or it belongs to another app).
    NotFound,
}

/// How a heartbeat went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// Unknown instance, or the client's copy is newer than ours: it should register again.
    NotFound,
}

struct Change {
    at: u64,
    instance: Instance,
}

#[derive(Default)]
struct State {
    /// App (upper case) → instance id → instance.
    apps: BTreeMap<String, BTreeMap<String, Instance>>,
    /// Instance id → its app, for `instances/{id}`.
    owners: HashMap<String, String>,
    recent: VecDeque<Change>,
    version: u64,
    /// Renewals in the current and the previous minute, for self-preservation.
    renewals: (u64, u64),
    /// Full-fetch documents of the current version.
    cache: HashMap<Format, Bytes>,
}

/// Eviction settings.
#[derive(Debug, Clone, Copy)]
pub struct Leases {
    /// Stop evicting when renewals fall under 85% of those expected (Eureka's self-preservation).
    pub self_preservation: bool,
}

pub struct Registry {
    state: Mutex<State>,
    version: watch::Sender<u64>,
    leases: Leases,
}

impl Registry {
    pub fn new(leases: Leases) -> Arc<Registry> {
        Arc::new(Registry {
            state: Mutex::new(State::default()),
            version: watch::Sender::new(0),
            leases,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (each change is one insert
        // or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the version: it changes on every registration, cancel, status or metadata change.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Records a change of `instance` (already stored, or removed) and moves the version.
    fn changed(&self, state: &mut State, mut instance: Instance, action: Action, now: u64) {
        instance.action = action;
        state.version += 1;
        state.cache.clear();
        state.recent.push_back(Change { at: now, instance });
        let cutoff = now.saturating_sub(DELTA_WINDOW.as_millis() as u64);
        while state.recent.front().is_some_and(|c| c.at < cutoff) {
            state.recent.pop_front();
        }
        self.version.send_replace(state.version);
    }

    /// Registers `instance` or replaces its previous registration (keeping a status override
    /// and the original registration time).
    pub fn register(&self, mut instance: Instance) {
        let now = now_ms();
        let mut state = self.lock();
        let app = state.apps.entry(instance.app.clone()).or_default();
        let action = match app.get(&instance.id) {
            Some(previous) => {
                instance.registration_timestamp = previous.registration_timestamp;
                if instance.overridden_status == Status::Unknown {
                    instance.overridden_status = previous.overridden_status;
                }
                Action::Modified
            }
            None => Action::Added,
        };
        instance.last_renewal_timestamp = now;
        instance.last_updated_timestamp = now;
        instance.action = action;
        app.insert(instance.id.clone(), instance.clone());
        if let Some(previous_app) = state
            .owners
            .insert(instance.id.clone(), instance.app.clone())
            .filter(|a| *a != instance.app)
        {
            // The same id registered under another app: it has moved.
            if let Some(old) = state
                .apps
                .get_mut(&previous_app)
                .and_then(|a| a.remove(&instance.id))
            {
                self.changed(&mut state, old, Action::Deleted, now);
            }
        }
        self.changed(&mut state, instance, action, now);
    }

    /// Renews a lease. `status` is what the client reports (Eureka's heartbeat `status=`),
    /// `dirty` its lastDirtyTimestamp.
    pub fn renew(
        &self,
        app: &str,
        id: &str,
        status: Option<Status>,
        dirty: Option<u64>,
    ) -> Renewal {
        let now = now_ms();
        let mut state = self.lock();
        state.renewals.0 += 1;
        let Some(instance) = state.apps.get_mut(app).and_then(|a| a.get_mut(id)) else {
            return Renewal::NotFound;
        };
        if dirty.is_some_and(|d| d > instance.last_dirty_timestamp) {
            return Renewal::NotFound;
        }
        instance.last_renewal_timestamp = now;
        let changed = status.filter(|s| *s != instance.reported_status);
        if let Some(status) = changed {
            instance.reported_status = status;
            instance.last_updated_timestamp = now;
            let snapshot = instance.clone();
            self.changed(&mut state, snapshot, Action::Modified, now);
        }
        Renewal::Renewed
    }

    /// Removes an instance.
    pub fn cancel(&self, app: &str, id: &str) -> Outcome {
        let now = now_ms();
        let mut state = self.lock();
        let Some(instance) = state.apps.get_mut(app).and_then(|a| a.remove(id)) else {
            return Outcome::NotFound;
        };
        if state.apps.get(app).is_some_and(BTreeMap::is_empty) {
            state.apps.remove(app);
        }
        state.owners.remove(id);
        self.changed(&mut state, instance, Action::Deleted, now);
        Outcome::Done
    }

    /// Applies `edit` to one instance and records the change.
    fn modify(&self, app: &str, id: &str, edit: impl FnOnce(&mut Instance)) -> Outcome {
        let now = now_ms();
        let mut state = self.lock();
        let Some(instance) = state.apps.get_mut(app).and_then(|a| a.get_mut(id)) else {
            return Outcome::NotFound;
        };
        edit(instance);
        instance.last_updated_timestamp = now;
        instance.last_dirty_timestamp = now;
        let snapshot = instance.clone();
        self.changed(&mut state, snapshot, Action::Modified, now);
        Outcome::Done
    }

    /// Sets a status override (`OUT_OF_SERVICE` takes an instance out of rotation).
    pub fn override_status(&self, app: &str, id: &str, status: Status) -> Outcome {
        self.modify(app, id, |i| {
            i.overridden_status = status;
            i.reported_status = status;
        })
    }

    /// Removes a status override; the instance's status becomes `status`, or UNKNOWN until its
    /// next heartbeat says otherwise, as in Eureka.
    pub fn remove_override(&self, app: &str, id: &str, status: Option<Status>) -> Outcome {
        self.modify(app, id, |i| {
            i.overridden_status = Status::Unknown;
            i.reported_status = status.unwrap_or(Status::Unknown);
        })
    }

    /// Adds or replaces metadata entries, within the bound on their number.
    pub fn update_metadata(
        &self,
        app: &str,
        id: &str,
        entries: Vec<(String, String)>,
    ) -> Result<Outcome, Invalid> {
        for (key, value) in &entries {
            check_metadata(key, value)?;
        }
        let now = now_ms();
        let mut state = self.lock();
        let Some(instance) = state.apps.get_mut(app).and_then(|a| a.get_mut(id)) else {
            return Ok(Outcome::NotFound);
        };
        let added: std::collections::BTreeSet<&str> = entries
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !instance.metadata.contains_key(*k))
            .collect();
        if instance.metadata.len() + added.len() > MAX_METADATA {
            return Err(Invalid(format!(
                "metadata would have more than {MAX_METADATA} entries"
            )));
        }
        instance.metadata.extend(entries);
        instance.last_updated_timestamp = now;
        instance.last_dirty_timestamp = now;
        let snapshot = instance.clone();
        self.changed(&mut state, snapshot, Action::Modified, now);
        Ok(Outcome::Done)
    }

    /// Removes the instances whose lease has run out; returns how many.
    pub fn evict(&self) -> usize {
        let now = now_ms();
        let mut state = self.lock();
        let (current, previous) = state.renewals;
        state.renewals = (0, current);
        if self.leases.self_preservation {
            // Renewals expected per minute, as Eureka reckons them.
            let expected: f64 = state
                .apps
                .values()
                .flat_map(BTreeMap::values)
                .map(|i| 60.0 / f64::from(i.renewal_interval_secs))
                .sum();
            if (previous.max(current) as f64) < 0.85 * expected {
                tracing::warn!(
                    renewals = previous.max(current),
                    expected,
                    "self-preservation: renewals are under 85% of those expected, evicting nothing"
                );
                return 0;
            }
        }
        let expired: Vec<(String, String)> = state
            .apps
            .values()
            .flat_map(BTreeMap::values)
            .filter(|i| now > i.last_renewal_timestamp + u64::from(i.duration_secs) * 1000)
            .map(|i| (i.app.clone(), i.id.clone()))
            .collect();
        drop(state);
        for (app, id) in &expired {
            tracing::info!(app, id, "lease expired, instance evicted");
            self.cancel(app, id);
        }
        expired.len()
    }

    pub fn instance(&self, app: &str, id: &str) -> Option<Instance> {
        self.lock().apps.get(app)?.get(id).cloned()
    }

    /// An instance by id alone.
    pub fn instance_by_id(&self, id: &str) -> Option<Instance> {
        let state = self.lock();
        let app = state.owners.get(id)?;
        state.apps.get(app)?.get(id).cloned()
    }

    /// Every instance, by app.
    pub fn snapshot(&self) -> (u64, BTreeMap<String, Vec<Instance>>) {
        let state = self.lock();
        let apps = state
            .apps
            .iter()
            .map(|(name, instances)| (name.clone(), instances.values().cloned().collect()))
            .collect();
        (state.version, apps)
    }

    /// The full-fetch document in `format`, from the cache when nothing changed since it was made.
    pub fn full(&self, format: Format) -> (u64, Bytes) {
        let mut state = self.lock();
        if let Some(cached) = state.cache.get(&format) {
            return (state.version, cached.clone());
        }
        let all = state.apps.values().flat_map(BTreeMap::values);
        let hashcode = render::hashcode(all);
        let apps: Vec<App<'_>> = state
            .apps
            .iter()
            .map(|(name, instances)| App {
                name,
                instances: instances.values().collect(),
            })
            .collect();
        let body = Bytes::from(render::applications(
            format,
            state.version,
            &hashcode,
            &apps,
        ));
        drop(apps);
        state.cache.insert(format, body.clone());
        (state.version, body)
    }

    /// The changes of the last three minutes, one entry per instance (its latest change), with
    /// the hashcode of the whole registry as it is now.
    pub fn delta(&self, format: Format) -> Vec<u8> {
        let state = self.lock();
        let hashcode = render::hashcode(state.apps.values().flat_map(BTreeMap::values));
        let mut latest: BTreeMap<(&str, &str), &Instance> = BTreeMap::new();
        for change in &state.recent {
            latest.insert(
                (&change.instance.app, &change.instance.id),
                &change.instance,
            );
        }
        let mut apps: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
        for ((app, _), instance) in latest {
            apps.entry(app).or_default().push(instance);
        }
        let apps: Vec<App<'_>> = apps
            .into_iter()
            .map(|(name, instances)| App { name, instances })
            .collect();
        render::applications(format, state.version, &hashcode, &apps)
    }

    /// The applications document of the instances whose (secure) VIP address is `vip`.
    pub fn by_vip(&self, format: Format, vip: &str, secure: bool) -> Option<Vec<u8>> {
        let state = self.lock();
        let matches = |i: &&Instance| {
            let address = if secure {
                &i.secure_vip_address
            } else {
                &i.vip_address
            };
            address
                .as_deref()
                .is_some_and(|a| a.split(',').any(|a| a.trim().eq_ignore_ascii_case(vip)))
        };
        let apps: Vec<App<'_>> = state
            .apps
            .iter()
            .map(|(name, instances)| App {
                name,
                instances: instances.values().filter(matches).collect(),
            })
            .filter(|app| !app.instances.is_empty())
            .collect();
        if apps.is_empty() {
            return None;
        }
        let hashcode = render::hashcode(apps.iter().flat_map(|a| a.instances.iter().copied()));
        Some(render::applications(
            format,
            state.version,
            &hashcode,
            &apps,
        ))
    }

    /// Puts back instances saved before a restart, each with a fresh lease (its clients keep
    /// renewing; those that are gone expire after one lease).
    pub fn restore(&self, instances: Vec<Instance>) {
        let now = now_ms();
        let mut state = self.lock();
        for mut instance in instances {
            instance.last_renewal_timestamp = now;
            state
                .owners
                .insert(instance.id.clone(), instance.app.clone());
            state
                .apps
                .entry(instance.app.clone())
                .or_default()
                .insert(instance.id.clone(), instance);
        }
        state.version += 1;
        state.cache.clear();
        self.version.send_replace(state.version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::parse_body;

    fn instance(app: &str, id: &str, duration: u32) -> Instance {
        let body = format!(
            r#"{{"instance": {{"instanceId": "{id}", "hostName": "h", "app": "{app}", "ipAddr": "127.0.0.1",
                "port": 1, "dataCenterInfo": {{}}, "leaseInfo": {{"renewalIntervalInSecs": 1, "durationInSecs": {duration}}}}}}}"#
        );
        parse_body(body.as_bytes(), now_ms()).unwrap()
    }

    fn registry() -> Arc<Registry> {
        Registry::new(Leases {
            self_preservation: false,
        })
    }

    #[test]
    fn every_change_moves_the_version_and_a_heartbeat_does_not() {
        let registry = registry();
        let watch = registry.watch();
        registry.register(instance("A", "1", 90));
        assert_eq!(*watch.borrow(), 1);
        assert_eq!(registry.renew("A", "1", None, None), Renewal::Renewed);
        assert_eq!(registry.version(), 1);
        assert_eq!(
            registry.override_status("A", "1", Status::OutOfService),
            Outcome::Done
        );
        assert_eq!(
            registry.instance("A", "1").unwrap().status(),
            Status::OutOfService
        );
        // A heartbeat saying UP does not undo an override.
        registry.renew("A", "1", Some(Status::Up), None);
        assert_eq!(
            registry.instance("A", "1").unwrap().status(),
            Status::OutOfService
        );
        registry.remove_override("A", "1", Some(Status::Up));
        assert_eq!(registry.instance("A", "1").unwrap().status(), Status::Up);
        assert_eq!(registry.cancel("A", "1"), Outcome::Done);
        assert_eq!(registry.cancel("A", "1"), Outcome::NotFound);
        assert_eq!(registry.renew("A", "1", None, None), Renewal::NotFound);
        assert!(registry.version() >= 5);
    }

    #[test]
    fn a_heartbeat_for_another_app_or_from_a_newer_client_copy_is_not_found() {
        let registry = registry();
        registry.register(instance("A", "1", 90));
        assert_eq!(registry.renew("B", "1", None, None), Renewal::NotFound);
        assert_eq!(
            registry.renew("A", "1", None, Some(now_ms() + 60_000)),
            Renewal::NotFound
        );
    }

    #[test]
    fn the_delta_holds_each_changed_instance_once_with_its_latest_action() {
        let registry = registry();
        registry.register(instance("A", "1", 90));
        registry.register(instance("A", "2", 90));
        registry.cancel("A", "2");
        let delta: serde_json::Value =
            serde_json::from_slice(&registry.delta(Format::Json)).unwrap();
        let instances = &delta["applications"]["application"][0]["instance"];
        let actions: Vec<(&str, &str)> = instances
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["instanceId"].as_str().unwrap(),
                    i["actionType"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(actions, [("1", "ADDED"), ("2", "DELETED")]);
        assert_eq!(delta["applications"]["apps__hashcode"], "UP_1_");
    }

    #[test]
    fn expired_leases_are_evicted_unless_self_preservation_holds_them() {
        let registry = registry();
        let mut gone = instance("A", "1", 1);
        gone.last_renewal_timestamp = 0;
        registry.register(gone);
        // register() renews; age it by hand.
        registry
            .lock()
            .apps
            .get_mut("A")
            .unwrap()
            .get_mut("1")
            .unwrap()
            .last_renewal_timestamp = 0;
        registry.register(instance("A", "2", 90));
        assert_eq!(registry.evict(), 1);
        assert!(registry.instance("A", "1").is_none());
        assert!(registry.instance("A", "2").is_some());

        let preserving = Registry::new(Leases {
            self_preservation: true,
        });
        preserving.register(instance("A", "1", 1));
        preserving
            .lock()
            .apps
            .get_mut("A")
            .unwrap()
            .get_mut("1")
            .unwrap()
            .last_renewal_timestamp = 0;
        assert_eq!(preserving.evict(), 0, "no renewals at all: preserve");
    }

    #[test]
    fn the_full_document_is_cached_until_the_next_change() {
        let registry = registry();
        registry.register(instance("A", "1", 90));
        let (v1, first) = registry.full(Format::Json);
        let (_, again) = registry.full(Format::Json);
        assert_eq!(first.as_ptr(), again.as_ptr());
        registry.register(instance("A", "2", 90));
        let (v2, changed) = registry.full(Format::Json);
        assert!(v2 > v1);
        assert_ne!(first, changed);
    }

    #[test]
    fn an_id_registered_under_another_app_moves() {
        let registry = registry();
        registry.register(instance("A", "1", 90));
        registry.register(instance("B", "1", 90));
        assert!(registry.instance("A", "1").is_none());
        assert_eq!(registry.instance_by_id("1").unwrap().app, "B");
    }
}
