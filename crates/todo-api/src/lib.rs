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
//! - [`store`]: the primary/replica storage layer and its backends.
//! - [`seed`]: the original sample rows.

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
use store::{Store, StoreError, StoreOptions};

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

/// The API's routes wrapped in the service contract, with readiness checks on every database.
pub fn app(store: Arc<Store>, readiness: &Readiness) -> axum::Router {
    let primary = store.clone();
    readiness.add_check("primary", true, move || {
        let store = primary.clone();
        async move { store.check_primary().await }
    });
    for index in 0..store.replica_count() {
        let replica = store.clone();
        // Reads can fall back to the primary, so a replica down does not make the API unready.
        readiness.add_check(format!("replica-{}", index + 1), false, move || {
            let store = replica.clone();
            async move { store.check_replica(index).await }
        });
    }
    let (routes, _) = routes::router(store);
    platform::contract_router(routes, readiness, ErrorStyle::Json)
}

/// Opens the database, then serves until `shutdown` resolves and drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let store = open_store(&config).await?;
    let readiness = Readiness::new();
    let router = app(store, &readiness);
    platform::serve(
        listener,
        router,
        config.common.serve_options(),
        readiness,
        shutdown,
    )
    .await?;
    Ok(())
}

/// Why the API could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
