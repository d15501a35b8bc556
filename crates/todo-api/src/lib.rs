//! `flotilla todo-api`: the TODO REST API of the seeds' TODO application, without its faults.
//!
//! It answers `GET/POST/PUT /todo` as the original did, adds `GET/PUT/PATCH/DELETE /todo/{id}`,
//! paging, precise 4xx errors and an OpenAPI document. Writes go to the primary database and reads
//! to the replicas; with no database configured it uses an embedded SQLite file.
//!
//! Layout:
//! - [`config`]: settings (`TODO_BIND`, `TODO_PRIMARY_URL`/`TODO_MASTER_URL`, ...).
//! - [`model`]: the item, its status, request bodies and their validation.
//! - [`routes`]: HTTP handlers and the OpenAPI document generated from them.
//! - [`error`]: the error type and the extractors that produce it.
//! - `conditional`: `ETag` and `If-None-Match` on reads.
//! - [`store`]: the primary/replica storage layer and its backends.
//! - [`seed`]: the original sample rows.

mod conditional;
pub mod config;
pub mod error;
pub mod model;
pub mod routes;
pub mod seed;
pub mod store;

use std::sync::Arc;

use platform::{ErrorStyle, Readiness};
use tokio::net::TcpListener;

pub use config::{Config, SETTINGS};
use store::{Store, StoreError, StoreOptions, StoreSlot};

/// Opens the database named by `config`, migrating and (if asked) seeding it.
pub async fn open_store(config: &Config) -> Result<Arc<Store>, StoreError> {
    let options = StoreOptions {
        timeout: config.db_timeout,
    };
    let store = Store::open(&config.primary, &config.replicas, options).await?;
    if config.seed {
        let inserted = store
            .seed_if_empty(&seed::sample_rows(), model::Timestamp::now())
            .await?;
        tracing::info!(inserted, "seeded the sample rows");
    }
    Ok(Arc::new(store))
}

/// The API's routes wrapped in the service contract. Until `store` is filled, the API answers
/// 503 "starting".
pub fn app(store: StoreSlot, readiness: &Readiness) -> platform::Contracted {
    let (routes, _) = routes::router(store);
    platform::contract_router(routes, readiness, ErrorStyle::Json)
}

/// Readiness checks on every database of `store`, from what the background check last found.
/// With replicas, the API can serve reads while any node answers, so only that is critical;
/// the primary and each replica are reported on their own.
fn add_checks(store: &Arc<Store>, readiness: &Readiness) {
    let replicated = store.replica_count() > 0;
    for name in store.node_names() {
        let store = store.clone();
        let critical = !replicated;
        let node = name.clone();
        readiness.add_check(name, critical, move || {
            let report = store.node_report(&node);
            async move { report }
        });
    }
    if replicated {
        let store = store.clone();
        readiness.add_check("reads", true, move || {
            let report = store.readable();
            async move { report }
        });
    }
}

/// Serves at once (503 "starting" until the database is open and migrated), then serves the API
/// until `shutdown` resolves and drains. A database that cannot be opened at all ends the run
/// with an error; one that is only locked is waited for.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let readiness = Readiness::new();
    let slot = StoreSlot::default();
    let router = app(slot.clone(), &readiness);
    let (give_up, gave_up) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            _ = gave_up => {}
        }
    };
    let serving = platform::serve(
        listener,
        router,
        config.common.serve_options(),
        readiness.clone(),
        stop,
    );
    let mut serving = std::pin::pin!(serving);
    let opened = tokio::select! {
        // Asked to stop before startup finished.
        served = &mut serving => return served.map_err(RunError::from),
        opened = open_store(&config) => opened,
    };
    match opened {
        Ok(store) => {
            add_checks(&store, &readiness);
            slot.set(store);
            readiness.started();
            serving.await?;
            Ok(())
        }
        Err(error) => {
            tracing::error!(%error, cause = ?std::error::Error::source(&error), "cannot open the database; stopping");
            let _ = give_up.send(());
            serving.await?;
            Err(error.into())
        }
    }
}

/// Why the API could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
