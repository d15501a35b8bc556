//! The embedded backend: one SQLite file in WAL mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, error::DatabaseError};

use super::{Cursor, ListQuery, StoreError, StoreOptions};
use crate::model::{Changes, NewTodo, Timestamp, Todo};

/// Readers that may query at once. Each is a thread inside sqlx; two cores gain nothing from more.
const READERS: u32 = 4;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub(super) struct Sqlite {
    /// The single writing connection; `None` for a read-only replica file.
    writer: Option<SqlitePool>,
    readers: SqlitePool,
    label: String,
}

/// Busy, locked, unopenable, I/O failure or full disk: conditions that can pass.
pub(super) fn is_transient(error: &dyn DatabaseError) -> bool {
    let Some(code) = error.code().and_then(|c| c.parse::<i32>().ok()) else {
        return false;
    };
    // The primary result code is the low byte of the extended one.
    matches!(
        code & 0xff,
        5 /* BUSY */ | 6 /* LOCKED */ | 8 /* READONLY */ | 10 /* IOERR */ | 13 /* FULL */ | 14 /* CANTOPEN */
    )
}

fn connect_options(path: &Path, options: StoreOptions) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        // In WAL mode NORMAL never corrupts the database and loses nothing when the process
        // crashes; only an OS crash or power cut can lose the last commits. FULL would fsync every
        // commit and cap writes at the disk's fsync rate.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(options.timeout)
}

fn pool_options(max: u32, timeout: Duration) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(max)
        .acquire_timeout(timeout)
        // A local file does not go stale between uses; pinging it before each query would add a
        // round trip to the connection thread on every request.
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
}

impl Sqlite {
    /// Opens (creating if needed) the primary file and migrates it.
    pub(super) async fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let writer = pool_options(1, options.timeout)
            .connect_with(connect_options(path, options).create_if_missing(true))
            .await
            .map_err(|e| open_error(path, e))?;
        migrate(&writer).await?;
        let readers = pool_options(READERS, options.timeout)
            .connect_with(connect_options(path, options).read_only(true))
            .await
            .map_err(|e| open_error(path, e))?;
        Ok(Sqlite {
            writer: Some(writer),
            readers,
            label: label(path),
        })
    }

    /// Opens an existing file for reading only (a replica copy).
    pub(super) async fn open_read_only(
        path: &Path,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let readers = pool_options(READERS, options.timeout)
            .connect_with(connect_options(path, options).read_only(true))
            .await
            .map_err(|e| open_error(path, e))?;
        Ok(Sqlite {
            writer: None,
            readers,
            label: label(path),
        })
    }

    pub(super) fn label(&self) -> &str {
        &self.label
    }

    fn writer(&self) -> Result<&SqlitePool, StoreError> {
        self.writer
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable(format!("{} is read-only", self.label)))
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        let pool = self.writer.as_ref().unwrap_or(&self.readers);
        sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::from_sqlx)
    }

    pub(super) async fn list(&self, query: &ListQuery) -> Result<Vec<Todo>, StoreError> {
        let rows = match query.after {
            None => {
                sqlx::query(
                    "SELECT id, title, content, status, created, updated FROM todo \
                     WHERE status = ?1 ORDER BY updated DESC, id DESC LIMIT ?2",
                )
                .bind(query.status.as_str())
                .bind(query.limit)
                .fetch_all(&self.readers)
                .await
            }
            Some(Cursor { updated, id }) => {
                sqlx::query(
                    "SELECT id, title, content, status, created, updated FROM todo \
                     WHERE status = ?1 AND (updated, id) < (?2, ?3) \
                     ORDER BY updated DESC, id DESC LIMIT ?4",
                )
                .bind(query.status.as_str())
                .bind(updated.0)
                .bind(id)
                .bind(query.limit)
                .fetch_all(&self.readers)
                .await
            }
        };
        rows.map_err(StoreError::from_sqlx)?
            .iter()
            .map(todo_from_row)
            .collect()
    }

    pub(super) async fn get(&self, id: i64) -> Result<Option<Todo>, StoreError> {
        let row = sqlx::query(
            "SELECT id, title, content, status, created, updated FROM todo WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.readers)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(todo_from_row).transpose()
    }

    pub(super) async fn create(&self, new: &NewTodo, now: Timestamp) -> Result<Todo, StoreError> {
        let row = sqlx::query(
            "INSERT INTO todo (title, content, status, created, updated) VALUES (?1, ?2, ?3, ?4, ?4) \
             RETURNING id, title, content, status, created, updated",
        )
        .bind(&new.title)
        .bind(&new.content)
        .bind(new.status.as_str())
        .bind(now.0)
        .fetch_one(self.writer()?)
        .await
        .map_err(StoreError::from_sqlx)?;
        todo_from_row(&row)
    }

    pub(super) async fn update(
        &self,
        id: i64,
        changes: &Changes,
        now: Timestamp,
    ) -> Result<Option<Todo>, StoreError> {
        let row = sqlx::query(
            "UPDATE todo SET title = COALESCE(?1, title), content = COALESCE(?2, content), \
             status = COALESCE(?3, status), updated = ?4 WHERE id = ?5 \
             RETURNING id, title, content, status, created, updated",
        )
        .bind(changes.title.as_deref())
        .bind(changes.content.as_deref())
        .bind(changes.status.map(|s| s.as_str()))
        .bind(now.0)
        .bind(id)
        .fetch_optional(self.writer()?)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(todo_from_row).transpose()
    }

    pub(super) async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM todo WHERE id = ?1")
            .bind(id)
            .execute(self.writer()?)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn seed_if_empty(
        &self,
        rows: &[NewTodo],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        // IMMEDIATE takes the write lock before counting, so two processes seeding the same file
        // at once cannot both find it empty.
        let mut tx = self
            .writer()?
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::from_sqlx)?;
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM todo")
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        if count > 0 {
            return Ok(0);
        }
        for row in rows {
            sqlx::query("INSERT INTO todo (title, content, status, created, updated) VALUES (?1, ?2, ?3, ?4, ?4)")
                .bind(&row.title)
                .bind(&row.content)
                .bind(row.status.as_str())
                .bind(now.0)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        }
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(rows.len())
    }
}

/// Runs the embedded migrations. Two processes starting on the same new file can race to apply
/// the same migration; the loser fails, and on retry finds it applied.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 3 => {
                attempt += 1;
                tracing::debug!(%error, attempt, "migration failed, retrying");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(error) => {
                return Err(StoreError::Unavailable(format!(
                    "migrating the schema failed: {error}"
                )));
            }
        }
    }
}

fn open_error(path: &Path, error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot open {}: {error}", path.display()))
}

fn label(path: &Path) -> String {
    format!("sqlite:{}", PathBuf::from(path).display())
}

fn todo_from_row(row: &SqliteRow) -> Result<Todo, StoreError> {
    let status: &str = row.try_get(3).map_err(StoreError::Other)?;
    Ok(Todo {
        id: row.try_get(0).map_err(StoreError::Other)?,
        title: row.try_get(1).map_err(StoreError::Other)?,
        content: row.try_get(2).map_err(StoreError::Other)?,
        status: status
            .parse()
            .map_err(|e| StoreError::Other(sqlx::Error::Decode(Box::new(e))))?,
        created: Timestamp(row.try_get(4).map_err(StoreError::Other)?),
        updated: Timestamp(row.try_get(5).map_err(StoreError::Other)?),
    })
}
