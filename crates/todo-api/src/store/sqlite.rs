//! The embedded backend: one SQLite file in WAL mode, through rusqlite.
//!
//! Connections live in small pools; a query checks one out, waiting at most the store timeout.
//! Writes run on tokio's blocking threads: they can wait for SQLite's write lock (another process
//! on the same file) and for the disk. Small reads run right on the async worker: in WAL mode a
//! reader never waits for a writer, a page of up to [`INLINE_ROWS`] rows costs tens of
//! microseconds, and handing it to another thread and back cost more than the query itself
//! (docs/benchmarks.md). Reader connections therefore have no busy timeout; if SQLite ever
//! reports busy (WAL recovery, an exclusive lock taken by another program), the read is retried
//! on a blocking thread with the full timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use deadpool::Runtime;
use deadpool::unmanaged::{Pool, PoolConfig};
use rusqlite::config::DbConfig;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Params, Row, Statement,
    TransactionBehavior, params,
};
use rusqlite_migration::{M, Migrations};

use super::{Cursor, ListQuery, Page, PageWriter, StoreError, StoreOptions};
use crate::model::{Changes, NewTodo, Status, Timestamp, Todo, TodoRef};

/// Readers that may query at once. Two cores gain nothing from more.
const READERS: usize = 4;

/// Reads of at most this many rows run on the async worker (see the module comment).
const INLINE_ROWS: u32 = 101;

/// The schema's history, applied in order; SQLite's `user_version` records how far a file is.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(include_str!(
        "../../migrations/sqlite/0001_create_todo.sql"
    ))])
}

/// The columns of an item, in the order `todo_from_row` reads them.
macro_rules! columns {
    () => {
        "id, title, content, status, created, updated"
    };
}

pub(super) struct Sqlite {
    /// The single writing connection: SQLite has one writer at a time, so writers queue here,
    /// in order, instead of spinning on the file lock. `None` for a read-only replica file.
    writer: Option<Pool<Connection>>,
    readers: Pool<Connection>,
    /// How long a query may wait for SQLite's lock when it has to wait.
    timeout: Duration,
    label: String,
}

impl StoreError {
    fn from_sqlite(error: rusqlite::Error) -> Self {
        let transient = matches!(
            error.sqlite_error_code(),
            Some(
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::ReadOnly
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::CannotOpen
            )
        );
        if transient {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Other(Box::new(error))
        }
    }
}

fn open_connection(path: &Path, writable: bool, timeout: Duration) -> rusqlite::Result<Connection> {
    let access = if writable {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    };
    // Each connection is used by one thread at a time (the pool guarantees it).
    let conn = Connection::open_with_flags(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    // Readers start without a busy timeout so an inline read never sleeps; see `read`.
    conn.busy_timeout(if writable { timeout } else { Duration::ZERO })?;
    if writable {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode NORMAL never corrupts the database and loses nothing when the process
        // crashes; only an OS crash or power cut can lose the last commits. FULL would fsync every
        // commit and cap writes at the disk's fsync rate.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // After a checkpoint, cut a WAL file that grew past this (say, under long reads) back down.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    }
    // Query planner stability: without it SQLite plans around the value bound to `LIMIT ?`, and
    // rusqlite clearing the bindings of a cached statement then makes SQLite parse and plan it
    // again on every use (measured in docs/benchmarks.md, todo-api on SQLite).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

async fn open_pool(
    path: &Path,
    writable: bool,
    size: usize,
    options: StoreOptions,
) -> Result<Pool<Connection>, StoreError> {
    let path = path.to_path_buf();
    let timeout = options.timeout;
    let mut connections = tokio::task::spawn_blocking(move || {
        (0..size)
            .map(|_| open_connection(&path, writable, timeout).map_err(|e| open_error(&path, e)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| StoreError::Other(Box::new(e)))??;
    if writable {
        let first = connections.remove(0);
        connections.insert(0, migrate(first).await?);
    }
    let pool = Pool::from_config(&PoolConfig {
        max_size: size,
        timeout: Some(options.timeout),
        runtime: Some(Runtime::Tokio1),
    });
    for conn in connections {
        pool.try_add(conn)
            .map_err(|(_, e)| StoreError::Other(Box::new(e)))?;
    }
    Ok(pool)
}

impl Sqlite {
    /// Opens (creating if needed) the primary file and migrates it.
    pub(super) async fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let writer = open_pool(path, true, 1, options).await?;
        let readers = open_pool(path, false, READERS, options).await?;
        Ok(Sqlite {
            writer: Some(writer),
            readers,
            timeout: options.timeout,
            label: label(path),
        })
    }

    /// Opens an existing file for reading only (a replica copy).
    pub(super) async fn open_read_only(
        path: &Path,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        Ok(Sqlite {
            writer: None,
            readers: open_pool(path, false, READERS, options).await?,
            timeout: options.timeout,
            label: label(path),
        })
    }

    pub(super) fn label(&self) -> &str {
        &self.label
    }

    fn writer(&self) -> Result<&Pool<Connection>, StoreError> {
        self.writer
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable(format!("{} is read-only", self.label)))
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        match &self.writer {
            Some(writer) => write(writer, |conn| conn.query_row("SELECT 1", [], |_| Ok(()))).await,
            None => {
                self.read(1, |conn| conn.query_row("SELECT 1", [], |_| Ok(())))
                    .await
            }
        }
    }

    /// Runs a read of at most `rows` rows: inline when small and the lock is free, otherwise on a
    /// blocking thread with the busy timeout.
    async fn read<T, F>(&self, rows: u32, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let mut conn = checkout(&self.readers).await?;
        if rows <= INLINE_ROWS {
            match f(&mut conn) {
                Err(error) if is_busy(&error) => {}
                done => return done.map_err(StoreError::from_sqlite),
            }
        }
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || {
            conn.busy_timeout(timeout)?;
            let result = f(&mut conn);
            conn.busy_timeout(Duration::ZERO)?;
            result
        })
        .await
        .map_err(|e| StoreError::Other(Box::new(e)))?
        .map_err(StoreError::from_sqlite)
    }

    pub(super) async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let query = *query;
        self.read(query.limit + 1, move |conn| {
            let status = query.status.as_str();
            // One row beyond the page tells whether another page follows.
            let fetch = query.limit + 1;
            let mut statement;
            let mut rows = match query.after {
                None => {
                    statement = conn.prepare_cached(concat!(
                        "SELECT ",
                        columns!(),
                        " FROM todo WHERE status = ?1 ORDER BY updated DESC, id DESC LIMIT ?2"
                    ))?;
                    statement.query(params![status, fetch])?
                }
                Some(Cursor { updated, id }) => {
                    statement = conn.prepare_cached(concat!(
                        "SELECT ",
                        columns!(),
                        " FROM todo WHERE status = ?1 AND (updated, id) < (?2, ?3) \
                         ORDER BY updated DESC, id DESC LIMIT ?4"
                    ))?;
                    statement.query(params![status, updated.0, id, fetch])?
                }
            };
            let mut page = PageWriter::new(query.limit);
            while let Some(row) = rows.next()? {
                let item = todo_ref_from_row(row)?;
                // Only a stored timestamp outside years 0-9999 can fail to serialise.
                let more_room = page.push(&item).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        5,
                        rusqlite::types::Type::Integer,
                        Box::new(e),
                    )
                })?;
                if !more_room {
                    break;
                }
            }
            Ok(page.finish())
        })
        .await
    }

    pub(super) async fn get(&self, id: i64) -> Result<Option<Todo>, StoreError> {
        self.read(1, move |conn| {
            conn.prepare_cached(concat!("SELECT ", columns!(), " FROM todo WHERE id = ?1"))?
                .query_row([id], todo_from_row)
                .optional()
        })
        .await
    }

    pub(super) async fn create(&self, new: &NewTodo, now: Timestamp) -> Result<Todo, StoreError> {
        let new = new.clone();
        write(self.writer()?, move |conn| {
            let mut insert = conn.prepare_cached(concat!(
                "INSERT INTO todo (title, content, status, created, updated) \
                 VALUES (?1, ?2, ?3, ?4, ?4) RETURNING ",
                columns!()
            ))?;
            returning_one(
                &mut insert,
                params![new.title, new.content, new.status.as_str(), now.0],
            )?
            .ok_or(rusqlite::Error::QueryReturnedNoRows)
        })
        .await
    }

    pub(super) async fn update(
        &self,
        id: i64,
        changes: &Changes,
        now: Timestamp,
    ) -> Result<Option<Todo>, StoreError> {
        let changes = changes.clone();
        write(self.writer()?, move |conn| {
            let mut update = conn.prepare_cached(concat!(
                "UPDATE todo SET title = COALESCE(?1, title), content = COALESCE(?2, content), \
                 status = COALESCE(?3, status), updated = ?4 WHERE id = ?5 RETURNING ",
                columns!()
            ))?;
            returning_one(
                &mut update,
                params![
                    changes.title,
                    changes.content,
                    changes.status.map(Status::as_str),
                    now.0,
                    id
                ],
            )
        })
        .await
    }

    pub(super) async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        write(self.writer()?, move |conn| {
            Ok(conn
                .prepare_cached("DELETE FROM todo WHERE id = ?1")?
                .execute([id])?
                > 0)
        })
        .await
    }

    pub(super) async fn seed_if_empty(
        &self,
        rows: &[NewTodo],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let rows = rows.to_vec();
        write(self.writer()?, move |conn| {
            // IMMEDIATE takes the write lock before counting, so two processes seeding the same
            // file at once cannot both find it empty.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let count: i64 = tx.query_row("SELECT COUNT(*) FROM todo", [], |row| row.get(0))?;
            if count > 0 {
                return Ok(0);
            }
            {
                let mut insert = tx.prepare(
                    "INSERT INTO todo (title, content, status, created, updated) VALUES (?1, ?2, ?3, ?4, ?4)",
                )?;
                for row in &rows {
                    insert.execute(params![row.title, row.content, row.status.as_str(), now.0])?;
                }
            }
            tx.commit()?;
            Ok(rows.len())
        })
        .await
    }
}

async fn checkout(
    pool: &Pool<Connection>,
) -> Result<deadpool::unmanaged::Object<Connection>, StoreError> {
    pool.get().await.map_err(|error| {
        StoreError::Unavailable(format!(
            "no database connection became free in time ({error})"
        ))
    })
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Runs `f` on the writer connection on a blocking thread.
async fn write<T, F>(pool: &Pool<Connection>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
{
    let mut conn = checkout(pool).await?;
    tokio::task::spawn_blocking(move || f(&mut conn))
        .await
        .map_err(|e| StoreError::Other(Box::new(e)))?
        .map_err(StoreError::from_sqlite)
}

/// Brings the schema up to date. While another connection holds the write lock (another process
/// migrating the same new file, or a long write), it waits and tries again, for as long as it
/// takes: the service answers 503 "starting" meanwhile, and a shutdown cancels the wait.
async fn migrate(mut conn: Connection) -> Result<Connection, StoreError> {
    let mut pause = Duration::from_millis(25);
    loop {
        let (back, result) = tokio::task::spawn_blocking(move || {
            let result = migrations().to_latest(&mut conn);
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::Other(Box::new(e)))?;
        conn = back;
        match result {
            Ok(()) => return Ok(conn),
            Err(rusqlite_migration::Error::RusqliteError { err, .. }) if is_busy(&err) => {
                tracing::warn!(error = %err, retry_in = ?pause, "the database is locked; waiting to migrate it");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(error) => {
                return Err(StoreError::Unavailable(format!(
                    "migrating the schema failed: {error}"
                )));
            }
        }
    }
}

fn open_error(path: &Path, error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot open {}: {error}", path.display()))
}

fn label(path: &Path) -> String {
    format!("sqlite:{}", PathBuf::from(path).display())
}

/// Runs a write with `RETURNING` and reads its one row, then steps on to the end. SQLite runs its
/// commit hooks, the WAL auto-checkpoint among them, only for a statement stepped to completion:
/// reading just the first row (as `query_row` does) left the WAL growing by every write, without
/// bound (guarded by the test `the_wal_stays_small_under_many_writes`).
fn returning_one(
    statement: &mut Statement<'_>,
    params: impl Params,
) -> rusqlite::Result<Option<Todo>> {
    let mut rows = statement.query(params)?;
    let item = match rows.next()? {
        Some(row) => Some(todo_from_row(row)?),
        None => None,
    };
    while rows.next()?.is_some() {}
    Ok(item)
}

/// An item borrowed from a row: strings point into SQLite's memory until the next step.
fn todo_ref_from_row<'r>(row: &'r Row<'_>) -> rusqlite::Result<TodoRef<'r>> {
    let status = row.get_ref(3)?.as_str()?;
    let status = status.parse().map_err(|e: crate::model::UnknownStatus| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(TodoRef {
        id: row.get(0)?,
        title: row.get_ref(1)?.as_str()?,
        content: row.get_ref(2)?.as_str()?,
        status,
        created: Timestamp(row.get(4)?),
        updated: Timestamp(row.get(5)?),
    })
}

fn todo_from_row(row: &Row<'_>) -> rusqlite::Result<Todo> {
    let item = todo_ref_from_row(row)?;
    Ok(Todo {
        id: item.id,
        title: item.title.to_owned(),
        content: item.content.to_owned(),
        status: item.status,
        created: item.created,
        updated: item.updated,
    })
}
