//! Spans in an SQLite file (`TRACES_DATA`): one row per span with the columns queries filter on
//! (indexed), the span's normalised JSON as it is answered, and its tags and annotations in a
//! table of their own for `annotationQuery`. Writes and reads use separate connections (WAL), so a
//! query never waits for a batch being stored. Old spans go by age and by count ([`Store::prune`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params_from_iter, types::Value};

use crate::span::{Kind, Span};

#[derive(Debug, thiserror::Error)]
#[error("trace store {path}: {source}")]
pub struct StoreError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS spans (
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        parent_id TEXT,
        kind TEXT,
        name TEXT,
        ts INTEGER NOT NULL,
        duration INTEGER,
        service TEXT,
        remote_service TEXT,
        error INTEGER NOT NULL,
        json TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS spans_trace ON spans (trace_id);
    CREATE INDEX IF NOT EXISTS spans_service_ts ON spans (service, ts);
    CREATE INDEX IF NOT EXISTS spans_service_name_ts ON spans (service, name, ts);
    CREATE INDEX IF NOT EXISTS spans_ts ON spans (ts);
    CREATE TABLE IF NOT EXISTS tags (
        trace_id TEXT NOT NULL,
        service TEXT,
        key TEXT NOT NULL,
        value TEXT,
        ts INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS tags_key ON tags (key, value, ts);
    CREATE INDEX IF NOT EXISTS tags_ts ON tags (ts);
";

/// What `GET /api/v2/traces` asks for (times in microseconds).
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub service: Option<String>,
    pub remote_service: Option<String>,
    pub span_name: Option<String>,
    /// `key=value` (a tag) or `key` (a tag key or an annotation), all required.
    pub annotations: Vec<(String, Option<String>)>,
    pub min_duration: Option<u64>,
    pub max_duration: Option<u64>,
    pub end_ts: u64,
    pub lookback: u64,
    pub limit: usize,
}

/// A call from one service to another, counted over a time window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub parent: String,
    pub child: String,
    pub call_count: u64,
    pub error_count: u64,
}

pub struct Store {
    writer: Arc<Mutex<Connection>>,
    /// The writer itself in memory (see [`Store::open`]).
    reader: Arc<Mutex<Connection>>,
    path: String,
}

impl Store {
    /// Opens (or creates) the store; `None` keeps it in memory.
    pub fn open(path: Option<&Path>) -> Result<Store, StoreError> {
        let shown = path.map_or("(memory)".to_string(), |p| p.display().to_string());
        let error = |source| StoreError {
            path: shown.clone(),
            source,
        };
        let (writer, reader) = match path {
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    let _ = std::fs::create_dir_all(parent);
                }
                let writer = Connection::open(path).map_err(error)?;
                writer.execute_batch(SCHEMA).map_err(error)?;
                let reader = Connection::open(path).map_err(error)?;
                for connection in [&reader, &writer] {
                    connection
                        .busy_timeout(std::time::Duration::from_secs(5))
                        .map_err(error)?;
                }
                let writer = Arc::new(Mutex::new(writer));
                (writer, Arc::new(Mutex::new(reader)))
            }
            None => {
                // In memory there is no WAL: a second connection reading while the first writes
                // fails at once (a locked shared cache does not wait). One connection serves
                // both, reads waiting for the write in progress.
                let connection = Connection::open_in_memory().map_err(error)?;
                connection.execute_batch(SCHEMA).map_err(error)?;
                let connection = Arc::new(Mutex::new(connection));
                (Arc::clone(&connection), connection)
            }
        };
        Ok(Store {
            writer,
            reader,
            path: shown,
        })
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores a batch in one transaction. A span without a timestamp is filed under `now`.
    pub fn insert(&self, spans: &[Span], now: u64) -> Result<(), StoreError> {
        self.insert_many(&[(spans, now)])
    }

    /// Stores several batches in one transaction (the writer thread groups them).
    pub fn insert_many(&self, batches: &[(&[Span], u64)]) -> Result<(), StoreError> {
        let mut connection = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let transaction = connection.transaction().map_err(|e| self.error(e))?;
        {
            let mut span_row = transaction
                .prepare_cached(
                    "INSERT INTO spans (trace_id, span_id, parent_id, kind, name, ts, duration,
                     service, remote_service, error, json) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                )
                .map_err(|e| self.error(e))?;
            let mut tag_row = transaction
                .prepare_cached(
                    "INSERT INTO tags (trace_id, service, key, value, ts) VALUES (?,?,?,?,?)",
                )
                .map_err(|e| self.error(e))?;
            for (span, now) in batches
                .iter()
                .flat_map(|(spans, now)| spans.iter().map(move |s| (s, *now)))
            {
                let ts = span.timestamp.unwrap_or(now) as i64;
                let json = serde_json::to_string(span).unwrap_or_default();
                span_row
                    .execute(rusqlite::params![
                        span.trace_id,
                        span.id,
                        span.parent_id,
                        span.kind.as_ref().map(kind_name),
                        span.name,
                        ts,
                        span.duration.map(|d| d as i64),
                        span.service(),
                        span.remote_service(),
                        span.is_error(),
                        json,
                    ])
                    .map_err(|e| self.error(e))?;
                for (key, value) in &span.tags {
                    tag_row
                        .execute(rusqlite::params![
                            span.trace_id,
                            span.service(),
                            key,
                            value,
                            ts
                        ])
                        .map_err(|e| self.error(e))?;
                }
                for annotation in &span.annotations {
                    tag_row
                        .execute(rusqlite::params![
                            span.trace_id,
                            span.service(),
                            annotation.value,
                            None::<String>,
                            ts
                        ])
                        .map_err(|e| self.error(e))?;
                }
            }
        }
        transaction.commit().map_err(|e| self.error(e))
    }

    fn read<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let connection = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        query(&connection).map_err(|e| self.error(e))
    }

    fn strings(&self, sql: &str, args: Vec<Value>) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut statement = c.prepare_cached(sql)?;
            let rows = statement.query_map(params_from_iter(args), |row| row.get(0))?;
            rows.collect()
        })
    }

    /// Every service that recorded a span.
    pub fn services(&self) -> Result<Vec<String>, StoreError> {
        self.strings(
            "SELECT DISTINCT service FROM spans WHERE service IS NOT NULL ORDER BY 1",
            vec![],
        )
    }

    /// The span names `service` recorded.
    pub fn span_names(&self, service: &str) -> Result<Vec<String>, StoreError> {
        self.strings(
            "SELECT DISTINCT name FROM spans WHERE service = ? AND name IS NOT NULL ORDER BY 1",
            vec![Value::Text(service.to_string())],
        )
    }

    /// The services `service` called (the remote endpoints it recorded).
    pub fn remote_services(&self, service: &str) -> Result<Vec<String>, StoreError> {
        self.strings(
            "SELECT DISTINCT remote_service FROM spans
             WHERE service = ? AND remote_service IS NOT NULL ORDER BY 1",
            vec![Value::Text(service.to_string())],
        )
    }

    /// The values seen for the tag `key` (at most 1000).
    pub fn tag_values(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.strings(
            "SELECT DISTINCT value FROM tags WHERE key = ? AND value IS NOT NULL
             ORDER BY 1 LIMIT 1000",
            vec![Value::Text(key.to_string())],
        )
    }

    /// The traces matching `query`, newest first, each as its spans.
    ///
    /// Spans are walked newest first through an index on what one span must match (the service
    /// and the span name, when asked for), and the traces they belong to are checked against the
    /// whole query a chunk at a time, until `limit` match: a search reads as much of the store as
    /// it needs, not every span in its time range.
    pub fn traces(&self, query: &TraceQuery) -> Result<Vec<Vec<serde_json::Value>>, StoreError> {
        let start = query.end_ts.saturating_sub(query.lookback) as i64;
        let end = query.end_ts as i64;
        // The index is named: without statistics SQLite may walk another one and read every
        // span of the window.
        let (index, filter, mut walk_args) = match (&query.service, &query.span_name) {
            (Some(service), Some(name)) => (
                "spans_service_name_ts",
                " AND service = ? AND name = ?",
                vec![Value::Text(service.clone()), Value::Text(name.clone())],
            ),
            (Some(service), None) => (
                "spans_service_ts",
                " AND service = ?",
                vec![Value::Text(service.clone())],
            ),
            _ => ("spans_ts", "", vec![]),
        };
        let walk = format!(
            "SELECT trace_id FROM spans INDEXED BY {index} WHERE ts BETWEEN ? AND ?{filter} \
             ORDER BY ts DESC"
        );
        walk_args.splice(0..0, [Value::Integer(start), Value::Integer(end)]);
        let (check, check_args) = trace_check(query, start, end);
        let ids = self.read(|c| {
            let mut walking = c.prepare(&walk)?;
            let mut rows = walking.query(params_from_iter(walk_args))?;
            let mut seen = HashSet::new();
            let mut found: Vec<String> = Vec::new();
            let mut chunk: Vec<String> = Vec::new();
            loop {
                let next = rows.next()?;
                if let Some(row) = next {
                    let id: String = row.get(0)?;
                    if seen.insert(id.clone()) {
                        chunk.push(id);
                    }
                }
                if chunk.len() >= 64 || (next.is_none() && !chunk.is_empty()) {
                    let matching = matching_traces(c, &check, &check_args, &chunk)?;
                    found.extend(chunk.drain(..).filter(|id| matching.contains(id)));
                    if found.len() >= query.limit {
                        found.truncate(query.limit);
                        break;
                    }
                }
                if next.is_none() {
                    break;
                }
            }
            Ok(found)
        })?;
        self.traces_by_id(&ids)
    }

    /// The traces with these (normalised) ids, in that order; unknown ones left out.
    pub fn traces_by_id(&self, ids: &[String]) -> Result<Vec<Vec<serde_json::Value>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; ids.len()].join(",");
        let sql =
            format!("SELECT trace_id, json FROM spans WHERE trace_id IN ({marks}) ORDER BY ts");
        let rows: Vec<(String, String)> = self.read(|c| {
            let mut statement = c.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(ids.iter()), |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect()
        })?;
        let mut by_trace: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
        for (trace, json) in rows {
            if let Ok(span) = serde_json::from_str(&json) {
                by_trace.entry(trace).or_default().push(span);
            }
        }
        Ok(ids.iter().filter_map(|id| by_trace.remove(id)).collect())
    }

    /// The calls between services in the window ending at `end_ts` (microseconds).
    pub fn dependencies(&self, end_ts: u64, lookback: u64) -> Result<Vec<Link>, StoreError> {
        let start = end_ts.saturating_sub(lookback) as i64;
        let rows: Vec<Row> = self.read(|c| {
            let mut statement = c.prepare_cached(
                "SELECT trace_id, span_id, parent_id, kind, service, remote_service, error
                 FROM spans WHERE trace_id IN
                   (SELECT DISTINCT trace_id FROM spans WHERE ts BETWEEN ? AND ?)",
            )?;
            let rows = statement.query_map([start, end_ts as i64], |row| {
                Ok(Row {
                    trace: row.get(0)?,
                    id: row.get(1)?,
                    parent: row.get(2)?,
                    kind: row.get(3)?,
                    service: row.get(4)?,
                    remote: row.get(5)?,
                    error: row.get(6)?,
                })
            })?;
            rows.collect()
        })?;
        Ok(link(&rows))
    }

    /// Removes spans older than `max_age` and, past `max_spans`, the oldest ones. Returns how
    /// many spans went.
    pub fn prune(&self, now: u64, max_age: u64, max_spans: u64) -> Result<usize, StoreError> {
        let connection = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let run = || -> rusqlite::Result<usize> {
            let mut cutoff = now.saturating_sub(max_age) as i64;
            let by_count: Option<i64> = connection
                .query_row(
                    "SELECT ts FROM spans ORDER BY ts DESC LIMIT 1 OFFSET ?",
                    [max_spans as i64],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(ts) = by_count {
                cutoff = cutoff.max(ts + 1);
            }
            let removed = connection.execute("DELETE FROM spans WHERE ts < ?", [cutoff])?;
            connection.execute("DELETE FROM tags WHERE ts < ?", [cutoff])?;
            Ok(removed)
        };
        run().map_err(|e| self.error(e))
    }

    /// How many spans are stored.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM spans", [], |row| row.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
    }
}

/// The query a trace must match as a whole, as SQL over one chunk of trace ids (appended as
/// `IN (...)`): conditions may hold on different spans of the trace, as in Zipkin.
fn trace_check(query: &TraceQuery, start: i64, end: i64) -> (String, Vec<Value>) {
    // By trace: the chunk's ids are the selective part.
    let mut sql =
        String::from("SELECT trace_id FROM spans INDEXED BY spans_trace WHERE ts BETWEEN ? AND ?");
    let mut args = vec![Value::Integer(start), Value::Integer(end)];
    if let Some(service) = &query.service {
        sql.push_str(" AND service = ?");
        args.push(Value::Text(service.clone()));
    }
    for (key, value) in &query.annotations {
        sql.push_str(
            " AND trace_id IN (SELECT trace_id FROM tags WHERE key = ? AND ts BETWEEN ? AND ?",
        );
        args.extend([
            Value::Text(key.clone()),
            Value::Integer(start),
            Value::Integer(end),
        ]);
        if let Some(value) = value {
            sql.push_str(" AND value = ?");
            args.push(Value::Text(value.clone()));
        }
        if let Some(service) = &query.service {
            sql.push_str(" AND service = ?");
            args.push(Value::Text(service.clone()));
        }
        sql.push(')');
    }
    // The chunk's ids go here; then the trace-wide conditions.
    sql.push_str(" AND trace_id IN ({ids}) GROUP BY trace_id HAVING 1");
    if let Some(name) = &query.span_name {
        sql.push_str(" AND SUM(name = ?) > 0");
        args.push(Value::Text(name.clone()));
    }
    if let Some(remote) = &query.remote_service {
        sql.push_str(" AND SUM(remote_service = ?) > 0");
        args.push(Value::Text(remote.clone()));
    }
    if query.min_duration.is_some() || query.max_duration.is_some() {
        let min = query.min_duration.unwrap_or(0) as i64;
        let max = query.max_duration.map_or(i64::MAX, |d| d as i64);
        sql.push_str(" AND SUM(duration BETWEEN ? AND ?) > 0");
        args.extend([Value::Integer(min), Value::Integer(max)]);
    }
    (sql, args)
}

/// Which of `ids` match the trace-wide `check`.
fn matching_traces(
    connection: &Connection,
    check: &str,
    args: &[Value],
    ids: &[String],
) -> rusqlite::Result<HashSet<String>> {
    let marks = vec!["?"; ids.len()].join(",");
    let sql = check.replace("{ids}", &marks);
    // The ids come after the conditions before them and before those after them.
    let split = check[..check.find("{ids}").unwrap_or(check.len())]
        .matches('?')
        .count();
    let all: Vec<Value> = args[..split]
        .iter()
        .cloned()
        .chain(ids.iter().map(|id| Value::Text(id.clone())))
        .chain(args[split..].iter().cloned())
        .collect();
    let mut statement = connection.prepare(&sql)?;
    let rows = statement.query_map(params_from_iter(all), |row| row.get(0))?;
    rows.collect()
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Client => "CLIENT",
        Kind::Server => "SERVER",
        Kind::Producer => "PRODUCER",
        Kind::Consumer => "CONSUMER",
    }
}

struct Row {
    trace: String,
    id: String,
    parent: Option<String>,
    kind: Option<String>,
    service: Option<String>,
    remote: Option<String>,
    error: bool,
}

/// Zipkin's dependency linking, in short: a CLIENT span and the SERVER span it called (same id,
/// or the server's parent) are one call from the client's service to the server's; a CLIENT span
/// whose server reported nothing is a call to its remote service; a SERVER span no client
/// reported is a call from its remote service or, failing that, from its parent's service. Each
/// call is counted once, as an error when either side failed.
fn link(rows: &[Row]) -> Vec<Link> {
    let key = |trace: &str, id: &str| (trace.to_string(), id.to_string());
    let mut servers: HashMap<(String, String), Vec<&Row>> = HashMap::new();
    let mut clients: HashSet<(String, String)> = HashSet::new();
    let mut by_id: HashMap<(String, String), &Row> = HashMap::new();
    for row in rows {
        match row.kind.as_deref() {
            Some("SERVER") => {
                servers
                    .entry(key(&row.trace, &row.id))
                    .or_default()
                    .push(row);
                if let Some(parent) = &row.parent {
                    servers
                        .entry(key(&row.trace, parent))
                        .or_default()
                        .push(row);
                }
            }
            Some("CLIENT") => {
                clients.insert(key(&row.trace, &row.id));
            }
            _ => {}
        }
        by_id.entry(key(&row.trace, &row.id)).or_insert(row);
    }
    let mut counts: HashMap<(String, String), (u64, u64)> = HashMap::new();
    let mut count = |parent: &str, child: &str, error: bool| {
        if parent != child {
            let entry = counts
                .entry((parent.to_string(), child.to_string()))
                .or_default();
            entry.0 += 1;
            entry.1 += u64::from(error);
        }
    };
    for row in rows {
        let Some(service) = row.service.as_deref() else {
            continue;
        };
        match row.kind.as_deref() {
            Some("CLIENT") => {
                let server = servers
                    .get(&key(&row.trace, &row.id))
                    .and_then(|s| s.iter().find(|s| s.service.is_some()));
                match server {
                    Some(server) => count(
                        service,
                        server.service.as_deref().unwrap_or_default(),
                        row.error || server.error,
                    ),
                    None => {
                        if let Some(remote) = row.remote.as_deref() {
                            count(service, remote, row.error);
                        }
                    }
                }
            }
            Some("SERVER") => {
                let reported = clients.contains(&key(&row.trace, &row.id))
                    || row
                        .parent
                        .as_ref()
                        .is_some_and(|p| clients.contains(&key(&row.trace, p)));
                if reported {
                    continue;
                }
                if let Some(remote) = row.remote.as_deref() {
                    count(remote, service, row.error);
                } else if let Some(parent) = row
                    .parent
                    .as_ref()
                    .and_then(|p| by_id.get(&key(&row.trace, p)))
                    .and_then(|p| p.service.as_deref())
                {
                    count(parent, service, row.error);
                }
            }
            _ => {}
        }
    }
    let mut links: Vec<Link> = counts
        .into_iter()
        .map(|((parent, child), (calls, errors))| Link {
            parent,
            child,
            call_count: calls,
            error_count: errors,
        })
        .collect();
    links.sort_by(|a, b| (&a.parent, &a.child).cmp(&(&b.parent, &b.child)));
    links
}
