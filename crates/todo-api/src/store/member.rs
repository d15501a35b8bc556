//! The nodes of a store (the primary and the replicas), and what the health check last learned
//! about each.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::{ListQuery, Page, Position, StoreError, mysql, sqlite};
use crate::model::Todo;

/// One database server (or file) and how to talk to it.
pub(super) enum Node {
    Sqlite(sqlite::Sqlite),
    MySql(mysql::MySql),
}

impl Node {
    pub(super) fn label(&self) -> &str {
        match self {
            Node::Sqlite(db) => db.label(),
            Node::MySql(db) => db.label(),
        }
    }

    pub(super) async fn ping(&self, replica: bool) -> Result<Option<Position>, StoreError> {
        match self {
            Node::Sqlite(db) => db.ping().await.map(|()| None),
            Node::MySql(db) => db.ping(replica).await,
        }
    }

    pub(super) async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        match self {
            Node::Sqlite(db) => db.list(query).await,
            Node::MySql(db) => db.list(query).await,
        }
    }

    pub(super) async fn get(&self, id: i64) -> Result<Option<Todo>, StoreError> {
        match self {
            Node::Sqlite(db) => db.get(id).await,
            Node::MySql(db) => db.get(id).await,
        }
    }
}

/// A node and what the health check last learned about it.
pub(super) struct Member {
    /// `primary`, `replica-1`, ...: the name in `/ready` and in metrics.
    pub(super) name: String,
    pub(super) node: Node,
    pub(super) replica: bool,
    pub(super) up: AtomicBool,
    /// The replication position the node has applied (replicas) or written (the primary).
    pub(super) position: Mutex<Option<Position>>,
    pub(super) last_error: Mutex<Option<String>>,
}

impl Member {
    /// Runs `query` on this node inside a CLIENT span of the request being served (when it is
    /// traced): named by the statement's shape (`SELECT todo`, never its values), with the
    /// database system and the node, and marked as an error when the query fails.
    pub(super) async fn traced<T>(
        &self,
        statement: &'static str,
        query: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let system = match self.node {
            Node::Sqlite(_) => "sqlite",
            Node::MySql(_) => "mariadb",
        };
        let (operation, table) = statement.split_once(' ').unwrap_or((statement, ""));
        let span = platform::otel::ChildSpan::start(
            statement,
            opentelemetry::trace::SpanKind::Client,
            vec![
                opentelemetry::KeyValue::new("db.system.name", system),
                opentelemetry::KeyValue::new("db.operation.name", operation),
                opentelemetry::KeyValue::new("db.collection.name", table),
                opentelemetry::KeyValue::new("db.query.summary", statement),
                opentelemetry::KeyValue::new("db.node", self.name.clone()),
                opentelemetry::KeyValue::new("peer.service", system),
            ],
        );
        let result = query.await;
        if let Some(span) = span {
            span.finish(result.as_ref().err().map(|e| e.to_string()));
        }
        result
    }

    pub(super) fn new(name: String, node: Node, replica: bool) -> Self {
        metrics::gauge!("todo_db_node_up", "node" => name.clone()).set(1.0);
        Member {
            name,
            node,
            replica,
            up: AtomicBool::new(true),
            position: Mutex::new(None),
            last_error: Mutex::new(None),
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(super) fn mark_down(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(node = %self.name, target_db = %self.node.label(), %error, "database node down");
            metrics::gauge!("todo_db_node_up", "node" => self.name.clone()).set(0.0);
        }
    }

    pub(super) fn mark_up(&self, position: Option<Position>) {
        if let Some(position) = position {
            *self.position.lock().unwrap_or_else(|e| e.into_inner()) = Some(position);
        }
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!(node = %self.name, target_db = %self.node.label(), "database node back up");
            metrics::gauge!("todo_db_node_up", "node" => self.name.clone()).set(1.0);
        }
    }

    /// Whether the node is known to have applied `required`.
    pub(super) fn has_applied(&self, required: &Position) -> bool {
        let position = self.position.lock().unwrap_or_else(|e| e.into_inner());
        position.as_ref().is_some_and(|p| p.covers(required))
    }

    /// Pings the node and records the outcome.
    pub(super) async fn check(&self) {
        match self.node.ping(self.replica).await {
            Ok(position) => self.mark_up(position),
            Err(StoreError::Unreachable(error)) => self.mark_down(&error),
            // Reachable, only busy: it stays in service.
            Err(_) => {}
        }
    }

    pub(super) fn report(&self) -> Result<Value, String> {
        let position = self
            .position
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(ToString::to_string);
        if self.is_up() {
            Ok(json!({"target": self.node.label(), "position": position}))
        } else {
            let error = self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Err(format!(
                "{}: {}",
                self.node.label(),
                error.unwrap_or_default()
            ))
        }
    }

    pub(super) fn count(&self, kind: &'static str) {
        metrics::counter!("todo_db_queries_total", "node" => self.name.clone(), "kind" => kind)
            .increment(1);
    }
}

pub(super) struct Members {
    pub(super) primary: Member,
    pub(super) replicas: Vec<Member>,
    pub(super) next_replica: AtomicUsize,
    /// The latest position this process has written.
    pub(super) last_write: Mutex<Option<Position>>,
}
