//! Where TODO items live: a write node (the primary) and read nodes (the replicas).
//!
//! Every write goes to the primary. Reads go to the replicas in turn, skipping any that is down
//! or has not yet applied the writes the reader must see, and fall back to the primary. A
//! background check pings every node each second: it takes unreachable nodes out, brings them
//! back when they answer, and records how far each replica has replicated.
//!
//! Read-your-writes: each write on MariaDB returns its GTID. The API remembers the latest one it
//! wrote and hands it to the client (`X-Todo-Position`); a replica serves a read only once it has
//! applied that position (the client's, or this process's latest write, whichever is later).
//! Otherwise the read goes to the primary. So a lagging replica never hides a write, and reads
//! return to the replica as soon as it has caught up.
//!
//! With the embedded default, the primary is one SQLite file, read through its own read pool.
//! Each backend module holds its own SQL.

mod member;
mod mysql;
mod position;
mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use member::{Member, Members, Node};
pub use position::{BadPosition, Position};

use crate::config::DatabaseUrl;
use crate::model::{Changes, NewTodo, Status, Timestamp, Todo, TodoRef};

/// A query running on one node.
type NodeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// How often the background check pings every node.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The server cannot be reached: the node is out until the background check reaches it.
    #[error("database unreachable: {0}")]
    Unreachable(String),
    /// Reachable, but it cannot serve now (locked, read-only, busy): worth retrying later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// No node can take the request.
    #[error("{0}")]
    NoNode(String),
    /// Anything else: a bug or a broken database.
    #[error("database error")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether the request may succeed later or elsewhere (answered 503, not 500).
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Other(_))
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

/// A page of items, already as the JSON array the API answers with: written straight from the
/// database rows, without an owned copy of each item in between.
#[derive(Debug, Clone)]
pub struct Page {
    pub json: Vec<u8>,
    pub items: usize,
    /// Where the next page starts, when more items remain.
    pub next: Option<Cursor>,
}

/// The result of a write and the replication position it was written at (MariaDB only).
#[derive(Debug, Clone)]
pub struct Written<T> {
    pub value: T,
    pub position: Option<Position>,
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

/// Connection settings shared by every node.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// How long an operation may wait for a connection or a lock before it gives up.
    pub timeout: Duration,
}

pub struct Store {
    members: Arc<Members>,
    checker: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(checker) = self.checker.get() {
            checker.abort();
        }
    }
}

impl Store {
    /// Opens the primary and the replicas and brings the primary's schema up to date, waiting for
    /// an unreachable or locked primary for as long as it takes (the API answers 503 "starting"
    /// meanwhile). A database that cannot be opened at all is an error.
    pub async fn open(
        primary: &DatabaseUrl,
        replicas: &[DatabaseUrl],
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let primary = match primary {
            DatabaseUrl::Sqlite(path) => Node::Sqlite(sqlite::Sqlite::open(path, options).await?),
            DatabaseUrl::MySql(target) => {
                let mut db = mysql::MySql::connect(target, options, true);
                if replicas.is_empty() {
                    db = db.without_positions();
                }
                let mut pause = Duration::from_millis(100);
                while let Err(error) = db.migrate().await {
                    if !error.is_transient() {
                        return Err(error);
                    }
                    tracing::warn!(target_db = %db.label(), %error, retry_in = ?pause, "primary not reachable yet; waiting to migrate it");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Node::MySql(db)
            }
        };
        let mut members = Vec::with_capacity(replicas.len());
        for (i, replica) in replicas.iter().enumerate() {
            let node = match replica {
                DatabaseUrl::Sqlite(path) => {
                    Node::Sqlite(sqlite::Sqlite::open_read_only(path, options).await?)
                }
                DatabaseUrl::MySql(target) => {
                    Node::MySql(mysql::MySql::connect(target, options, false))
                }
            };
            members.push(Member::new(format!("replica-{}", i + 1), node, true));
        }
        let store = Store {
            members: Arc::new(Members {
                primary: Member::new("primary".to_string(), primary, false),
                replicas: members,
                next_replica: AtomicUsize::new(0),
                last_write: Mutex::new(None),
            }),
            checker: OnceLock::new(),
        };
        store.check_all().await;
        // Replicas serve reads once they have the schema the migration just wrote.
        let schema = store
            .members
            .primary
            .position
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        *store
            .members
            .last_write
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = schema;
        store.start_checker();
        Ok(store)
    }

    async fn check_all(&self) {
        let members = &self.members;
        let replicas = members.replicas.iter().map(Member::check);
        tokio::join!(
            members.primary.check(),
            futures_util::future::join_all(replicas)
        );
    }

    fn start_checker(&self) {
        let members = Arc::downgrade(&self.members);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(members) = members.upgrade() else {
                    return;
                };
                let replicas = members.replicas.iter().map(Member::check);
                tokio::join!(
                    members.primary.check(),
                    futures_util::future::join_all(replicas)
                );
            }
        });
        let _ = self.checker.set(task.abort_handle());
    }

    /// The position a read must see: the client's, or this process's latest write, if later.
    fn required(&self, client: Option<&Position>) -> Option<Position> {
        let last = self
            .members
            .last_write
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (last, client) {
            (None, None) => None,
            (Some(p), None) => Some(p),
            (None, Some(c)) => Some(c.clone()),
            (Some(mut p), Some(c)) => {
                p.merge(c);
                Some(p)
            }
        }
    }

    /// Runs a read on a replica that is up and has applied `required`, in turn, falling back to
    /// the primary. An unreachable replica is taken out and the read moves on.
    async fn read<'a, T>(
        &'a self,
        statement: &'static str,
        client: Option<&Position>,
        op: impl Fn(&'a Node) -> NodeFuture<'a, T>,
    ) -> Result<T, StoreError> {
        let members = &self.members;
        let required = self.required(client);
        let count = members.replicas.len();
        let start = if count > 0 {
            members.next_replica.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        for k in 0..count {
            let member = &members.replicas[(start + k) % count];
            if !member.is_up() {
                continue;
            }
            if let Some(required) = &required
                && !member.has_applied(required)
            {
                // Ask once more: the background check may simply not have seen the latest yet.
                member.check().await;
                if !member.has_applied(required) {
                    metrics::counter!("todo_db_reads_behind_total", "node" => member.name.clone())
                        .increment(1);
                    continue;
                }
            }
            match member.traced(statement, op(&member.node)).await {
                Ok(value) => {
                    member.count("read");
                    return Ok(value);
                }
                Err(error) if error.is_transient() => {
                    if let StoreError::Unreachable(cause) = &error {
                        member.mark_down(cause);
                    }
                    tracing::warn!(node = %member.name, %error, "read failed; trying the next node");
                    metrics::counter!("todo_db_failovers_total", "from" => member.name.clone())
                        .increment(1);
                }
                Err(error) => return Err(error),
            }
        }
        let primary = &members.primary;
        let result = primary.traced(statement, op(&primary.node)).await;
        primary.count("read");
        match result {
            Err(StoreError::Unreachable(cause)) => {
                primary.mark_down(&cause);
                Err(StoreError::NoNode(format!(
                    "no database can serve reads: primary unreachable ({cause})"
                )))
            }
            other => other,
        }
    }

    /// Runs a write on the primary. A primary known to be down fails at once rather than making
    /// every request wait for a connect timeout; the background check notices its return.
    async fn write<'a, T>(
        &'a self,
        statement: &'static str,
        op: impl FnOnce(&'a Node) -> NodeFuture<'a, (T, Option<Position>)>,
    ) -> Result<Written<T>, StoreError> {
        let primary = &self.members.primary;
        if !primary.is_up() {
            let cause = primary
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(StoreError::NoNode(format!(
                "primary database unavailable: {cause}"
            )));
        }
        primary.count("write");
        match primary.traced(statement, op(&primary.node)).await {
            Ok((value, position)) => {
                if let Some(position) = &position {
                    let mut last = self
                        .members
                        .last_write
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    last.get_or_insert_with(Position::default).merge(position);
                }
                Ok(Written { value, position })
            }
            Err(StoreError::Unreachable(cause)) => {
                primary.mark_down(&cause);
                Err(StoreError::NoNode(format!(
                    "primary database unavailable: {cause}"
                )))
            }
            Err(StoreError::Unavailable(cause)) => {
                Err(StoreError::Unavailable(format!("primary {cause}")))
            }
            Err(other) => Err(other),
        }
    }

    /// One page of a column, newest change first.
    pub async fn list(
        &self,
        query: &ListQuery,
        after: Option<&Position>,
    ) -> Result<Page, StoreError> {
        self.read("SELECT todo", after, |node| Box::pin(node.list(query)))
            .await
    }

    pub async fn get(&self, id: i64, after: Option<&Position>) -> Result<Option<Todo>, StoreError> {
        self.read("SELECT todo", after, |node| Box::pin(node.get(id)))
            .await
    }

    pub async fn create(&self, new: &NewTodo, now: Timestamp) -> Result<Written<Todo>, StoreError> {
        self.write("INSERT todo", |node| {
            Box::pin(async move {
                match node {
                    Node::Sqlite(db) => db.create(new, now).await.map(|todo| (todo, None)),
                    Node::MySql(db) => db.create(new, now).await,
                }
            })
        })
        .await
    }

    /// Overwrites every field; `None` when there is no such item.
    pub async fn replace(
        &self,
        id: i64,
        todo: &NewTodo,
        now: Timestamp,
    ) -> Result<Written<Option<Todo>>, StoreError> {
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
    ) -> Result<Written<Option<Todo>>, StoreError> {
        self.write("UPDATE todo", |node| {
            Box::pin(async move {
                match node {
                    Node::Sqlite(db) => db.update(id, changes, now).await.map(|todo| (todo, None)),
                    Node::MySql(db) => db.update(id, changes, now).await,
                }
            })
        })
        .await
    }

    /// `false` when there was no such item.
    pub async fn delete(&self, id: i64) -> Result<Written<bool>, StoreError> {
        self.write("DELETE todo", |node| {
            Box::pin(async move {
                match node {
                    Node::Sqlite(db) => db.delete(id).await.map(|gone| (gone, None)),
                    Node::MySql(db) => db.delete(id).await,
                }
            })
        })
        .await
    }

    /// Inserts `rows` if the table is empty, atomically; returns how many were inserted.
    pub async fn seed_if_empty(
        &self,
        rows: &[NewTodo],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let written = self
            .write("INSERT todo", |node| {
                Box::pin(async move {
                    let inserted = match node {
                        Node::Sqlite(db) => db.seed_if_empty(rows, now).await,
                        Node::MySql(db) => db.seed_if_empty(rows, now).await,
                    };
                    inserted.map(|n| (n, None))
                })
            })
            .await?;
        Ok(written.value)
    }

    /// Names of the nodes, primary first: what `/ready` reports on.
    pub fn node_names(&self) -> Vec<String> {
        std::iter::once(&self.members.primary)
            .chain(&self.members.replicas)
            .map(|m| m.name.clone())
            .collect()
    }

    pub fn replica_count(&self) -> usize {
        self.members.replicas.len()
    }

    /// What the last check found about node `name`.
    pub fn node_report(&self, name: &str) -> Result<Value, String> {
        std::iter::once(&self.members.primary)
            .chain(&self.members.replicas)
            .find(|m| m.name == name)
            .map_or_else(|| Err(format!("no node {name}")), Member::report)
    }

    /// Whether some node can serve reads.
    pub fn readable(&self) -> Result<Value, String> {
        let up: Vec<&str> = std::iter::once(&self.members.primary)
            .chain(&self.members.replicas)
            .filter(|m| m.is_up())
            .map(|m| m.name.as_str())
            .collect();
        if up.is_empty() {
            Err("no database node answers".to_string())
        } else {
            Ok(json!({"nodes_up": up}))
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
