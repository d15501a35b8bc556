//! Where TODO items live: a write node (the primary) and read nodes (the replicas).
//!
//! Every write goes to the primary; every read goes to a read node, in turn. With the embedded
//! default both are the same SQLite file, opened through two pools: one connection that writes
//! (SQLite has one writer at a time, so writers queue here rather than spin on the file lock) and
//! several read-only connections that read in parallel under WAL.
//!
//! A backend is a variant of [`Node`]; each backend module holds its own SQL.

mod sqlite;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::DatabaseUrl;
use crate::model::{Changes, NewTodo, Status, Timestamp, Todo};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is locked past the timeout: worth retrying later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a broken database.
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

impl StoreError {
    /// Sorts a driver error into "try again later" and "broken".
    pub(crate) fn from_sqlx(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &error {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                StoreError::Unavailable(error.to_string())
            }
            E::Database(db) if sqlite::is_transient(db.as_ref()) => {
                StoreError::Unavailable(db.message().to_string())
            }
            _ => StoreError::Other(error),
        }
    }
}

/// Position after the last item of a page: items sort by `(updated, id)` descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub updated: Timestamp,
    pub id: i64,
}

/// One page of one column.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery {
    pub status: Status,
    pub after: Option<Cursor>,
    pub limit: u32,
}

/// One database server (or file) and how to talk to it.
enum Node {
    Sqlite(sqlite::Sqlite),
}

impl Node {
    fn label(&self) -> &str {
        match self {
            Node::Sqlite(db) => db.label(),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Node::Sqlite(db) => db.ping().await,
        }
    }
}

pub struct Store {
    primary: Node,
    replicas: Vec<Node>,
    next_replica: AtomicUsize,
}

/// Connection settings shared by every node.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// How long an operation may wait for a connection or a lock before it gives up.
    pub timeout: Duration,
}

impl Store {
    /// Opens the primary and the replicas and brings the primary's schema up to date.
    pub async fn open(
        primary: &DatabaseUrl,
        replicas: &[DatabaseUrl],
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let primary_node = match primary {
            DatabaseUrl::Sqlite(path) => Node::Sqlite(sqlite::Sqlite::open(path, options).await?),
        };
        let mut replica_nodes = Vec::with_capacity(replicas.len());
        for replica in replicas {
            replica_nodes.push(match replica {
                DatabaseUrl::Sqlite(path) => {
                    Node::Sqlite(sqlite::Sqlite::open_read_only(path, options).await?)
                }
            });
        }
        Ok(Store {
            primary: primary_node,
            replicas: replica_nodes,
            next_replica: AtomicUsize::new(0),
        })
    }

    /// The node the next read goes to: the replicas in turn, or the primary's readers.
    fn reader(&self) -> &Node {
        if self.replicas.is_empty() {
            return &self.primary;
        }
        let n = self.next_replica.fetch_add(1, Ordering::Relaxed);
        &self.replicas[n % self.replicas.len()]
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Todo>, StoreError> {
        match self.reader() {
            Node::Sqlite(db) => db.list(query).await,
        }
    }

    pub async fn get(&self, id: i64) -> Result<Option<Todo>, StoreError> {
        match self.reader() {
            Node::Sqlite(db) => db.get(id).await,
        }
    }

    pub async fn create(&self, new: &NewTodo, now: Timestamp) -> Result<Todo, StoreError> {
        match &self.primary {
            Node::Sqlite(db) => db.create(new, now).await,
        }
    }

    /// Overwrites every field; `None` when there is no such item.
    pub async fn replace(
        &self,
        id: i64,
        todo: &NewTodo,
        now: Timestamp,
    ) -> Result<Option<Todo>, StoreError> {
        let changes = Changes {
            title: Some(todo.title.clone()),
            content: Some(todo.content.clone()),
            status: Some(todo.status),
        };
        self.update(id, &changes, now).await
    }

    /// Changes the given fields; `None` when there is no such item.
    pub async fn update(
        &self,
        id: i64,
        changes: &Changes,
        now: Timestamp,
    ) -> Result<Option<Todo>, StoreError> {
        match &self.primary {
            Node::Sqlite(db) => db.update(id, changes, now).await,
        }
    }

    /// `false` when there was no such item.
    pub async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        match &self.primary {
            Node::Sqlite(db) => db.delete(id).await,
        }
    }

    /// Inserts `rows` if the table is empty, in one transaction; returns how many were inserted.
    pub async fn seed_if_empty(
        &self,
        rows: &[NewTodo],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        match &self.primary {
            Node::Sqlite(db) => db.seed_if_empty(rows, now).await,
        }
    }

    /// How many replicas the store reads from (0: reads go to the primary's read pool).
    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// Readiness of the primary: where it is, or what is wrong with it.
    pub async fn check_primary(&self) -> Result<Value, String> {
        check(&self.primary).await
    }

    /// Readiness of replica `index`.
    pub async fn check_replica(&self, index: usize) -> Result<Value, String> {
        check(&self.replicas[index]).await
    }
}

async fn check(node: &Node) -> Result<Value, String> {
    node.ping()
        .await
        .map(|()| json!({"target": node.label()}))
        .map_err(|error| format!("{}: {error}", node.label()))
}
