//! The registry saved to an SQLite file (`REGISTRY_DATA`), so a restarted registry does not
//! start empty: within a second of a change, and at shutdown, every instance is written as the
//! JSON document Eureka clients read; at startup they are read back, each with a fresh lease.
//! (Clients register again on a 404 anyway; this spares them the window in which the registry
//! would be empty.)

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use crate::instance::{Instance, parse_body};
use crate::registry::{Registry, now_ms};
use crate::render::{self, Format};

/// How often the registry is saved when it has changed.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("registry data {path}: {source}")]
pub struct StoreError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

pub struct Store {
    connection: Mutex<Connection>,
    path: String,
}

impl Store {
    pub fn open(path: &Path) -> Result<Arc<Store>, StoreError> {
        let shown = path.display().to_string();
        let error = |source| StoreError {
            path: shown.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        let connection = Connection::open(path).map_err(error)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, document TEXT NOT NULL);",
            )
            .map_err(error)?;
        Ok(Arc::new(Store {
            connection: Mutex::new(connection),
            path: shown,
        }))
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source,
        }
    }

    /// The saved instances; one that no longer reads is skipped with a warning.
    pub fn load(&self) -> Result<Vec<Instance>, StoreError> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let mut statement = connection
            .prepare("SELECT id, document FROM instances")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(|e| self.error(e))?;
        let now = now_ms();
        let mut instances = Vec::new();
        for row in rows {
            let (id, document) = row.map_err(|e| self.error(e))?;
            match parse_body(document.as_bytes(), now) {
                Ok(instance) => instances.push(instance),
                Err(invalid) => {
                    tracing::warn!(id, %invalid, "a saved instance does not read; skipped")
                }
            }
        }
        Ok(instances)
    }

    /// Replaces what is saved with `instances`, in one transaction.
    pub fn save(&self, instances: &[Instance]) -> Result<(), StoreError> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let transaction = connection.transaction().map_err(|e| self.error(e))?;
        transaction
            .execute("DELETE FROM instances", [])
            .map_err(|e| self.error(e))?;
        {
            let mut insert = transaction
                .prepare("INSERT OR REPLACE INTO instances (id, document) VALUES (?1, ?2)")
                .map_err(|e| self.error(e))?;
            for instance in instances {
                let document = render::instance(Format::Json, instance);
                let document = String::from_utf8_lossy(&document);
                insert
                    .execute((&instance.id, document.as_ref()))
                    .map_err(|e| self.error(e))?;
            }
        }
        transaction.commit().map_err(|e| self.error(e))
    }
}

/// Saves the registry whenever its version has moved, checking every second, until `stop`
/// resolves; then saves once more.
pub async fn keep_saved(
    store: Arc<Store>,
    registry: Arc<Registry>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut saved = registry.version();
    let save = |registry: Arc<Registry>, store: Arc<Store>| async move {
        let (version, apps) = registry.snapshot();
        let instances: Vec<Instance> = apps.into_values().flatten().collect();
        let outcome = tokio::task::spawn_blocking(move || store.save(&instances)).await;
        match outcome {
            Ok(Ok(())) => Some(version),
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot save the registry");
                None
            }
            Err(_) => None,
        }
    };
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(SAVE_INTERVAL);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {
                if registry.version() != saved
                    && let Some(version) = save(registry.clone(), store.clone()).await
                {
                    saved = version;
                }
            }
        }
    }
    save(registry, store).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Leases;

    #[test]
    fn saved_instances_come_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let body = r#"{"instance": {"instanceId": "h:a:1", "hostName": "h", "app": "a", "ipAddr": "10.0.0.1",
            "port": 1, "dataCenterInfo": {}, "metadata": {"zone": "z"}}}"#;
        let instance = parse_body(body.as_bytes(), 5).unwrap();
        Store::open(&path)
            .unwrap()
            .save(std::slice::from_ref(&instance))
            .unwrap();
        let loaded = Store::open(&path).unwrap().load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, "h:a:1");
        assert_eq!(loaded[0].metadata["zone"], "z");
        let registry = Registry::new(Leases {
            self_preservation: false,
        });
        registry.restore(loaded);
        assert!(registry.instance("A", "h:a:1").is_some());
    }
}
