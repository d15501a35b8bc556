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
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::DatabaseUrl;
use crate::model::{Changes, NewTodo, Status, Timestamp, Todo, TodoRef};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is locked past the timeout: worth retrying later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a broken database.
    #[error("database error")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
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

/// A page of items, already as the JSON array the API answers with: written straight from the
/// database rows, without an owned copy of each item in between.
#[derive(Debug, Clone)]
pub struct Page {
    pub json: Vec<u8>,
    pub items: usize,
    /// Where the next page starts, when more items remain.
    pub next: Option<Cursor>,
}

/// Roughly the JSON size of one item, to allocate a page once instead of regrowing it.
const ITEM_JSON_BYTES: usize = 160;

/// Accumulates a page from rows in list order; the store fetches one row beyond the limit to
/// learn whether another page follows.
pub(crate) struct PageWriter {
    page: Page,
    limit: usize,
    last: Option<Cursor>,
}

impl PageWriter {
    pub(crate) fn new(limit: u32) -> Self {
        let limit = limit as usize;
        let mut json = Vec::with_capacity(2 + limit.min(200) * ITEM_JSON_BYTES);
        json.push(b'[');
        PageWriter {
            page: Page {
                json,
                items: 0,
                next: None,
            },
            limit,
            last: None,
        }
    }

    /// Adds a row; returns `false` once the page is full (the row only told that more remain).
    pub(crate) fn push(&mut self, item: &TodoRef<'_>) -> Result<bool, serde_json::Error> {
        if self.page.items == self.limit {
            self.page.next = self.last;
            return Ok(false);
        }
        if self.page.items > 0 {
            self.page.json.push(b',');
        }
        item.write_json(&mut self.page.json)?;
        self.page.items += 1;
        self.last = Some(Cursor {
            updated: item.updated,
            id: item.id,
        });
        Ok(true)
    }

    pub(crate) fn finish(mut self) -> Page {
        self.page.json.push(b']');
        self.page
    }
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

/// The store, once startup has opened it; requests before that are answered 503.
#[derive(Clone, Default)]
pub struct StoreSlot(Arc<OnceLock<Arc<Store>>>);

impl StoreSlot {
    pub fn get(&self) -> Option<&Arc<Store>> {
        self.0.get()
    }

    pub fn set(&self, store: Arc<Store>) {
        // Startup opens the store once; a second set would be a bug, and keeps the first.
        let _ = self.0.set(store);
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

    /// One page of a column, newest change first.
    pub async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
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
