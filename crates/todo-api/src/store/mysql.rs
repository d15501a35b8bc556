//! The MySQL/MariaDB backend, through sqlx. One pool per server; connections are opened lazily,
//! so the API starts (and serves from replicas) while a server is still down.

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Connection, Row};
use time::{OffsetDateTime, PrimitiveDateTime};

use super::position::Position;
use super::{Cursor, ListQuery, Page, PageWriter, StoreError, StoreOptions};
use crate::config::MySqlTarget;
use crate::model::{Changes, NewTodo, Status, Timestamp, Todo, TodoRef};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

/// Connections per server. MariaDB handles these in threads; more buys nothing on small hosts.
const POOL_SIZE: u32 = 16;
/// A write connection idle longer than this is pinged before use.
const VERIFY_IDLE: Duration = Duration::from_millis(500);

macro_rules! columns {
    () => {
        "id, title, content, status, created, updated"
    };
}

pub(super) struct MySql {
    pool: MySqlPool,
    label: String,
    /// Whether writes read back their replication position (a round trip each): only worth it
    /// when there are replicas to read from.
    track_position: bool,
}

impl StoreError {
    /// Connection-level failures mean the server is unreachable (the node is taken out);
    /// a few server errors mean it is reachable but cannot serve this now.
    fn from_mysql(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &error {
            E::PoolTimedOut => {
                StoreError::Unreachable("no connection within the timeout".to_string())
            }
            E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed | E::Protocol(_) => {
                StoreError::Unreachable(error.to_string())
            }
            E::Database(db) => match db
                .try_downcast_ref::<MySqlDatabaseError>()
                .map(MySqlDatabaseError::number)
            {
                // server shutting down
                Some(1053) => StoreError::Unreachable(db.message().to_string()),
                // too many connections, lock wait timeout, deadlock, read-only server; and a
                // replica that has not yet replicated the database or table
                Some(1040 | 1205 | 1213 | 1290 | 1836 | 1049 | 1146) => {
                    StoreError::Unavailable(db.message().to_string())
                }
                _ => StoreError::Other(Box::new(error)),
            },
            _ => StoreError::Other(Box::new(error)),
        }
    }
}

fn datetime(at: Timestamp) -> PrimitiveDateTime {
    let at = OffsetDateTime::from_unix_timestamp(at.0).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    PrimitiveDateTime::new(at.date(), at.time())
}

impl MySql {
    /// A pool for one server; nothing is connected yet.
    pub(super) fn connect(
        target: &MySqlTarget,
        options: StoreOptions,
        verify_connections: bool,
    ) -> Self {
        let connect = MySqlConnectOptions::new()
            .host(&target.host)
            .port(target.port)
            .username(&target.user)
            .password(&target.password)
            .database(&target.database)
            .charset("utf8mb4")
            // DATETIME columns hold UTC.
            .timezone(Some("+00:00".to_string()))
            .statement_cache_capacity(64);
        let pool = MySqlPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(options.timeout)
            .idle_timeout(Some(Duration::from_secs(60)))
            .test_before_acquire(false);
        // Writes check a connection that sat idle before using it (a restarted primary leaves
        // dead ones, and a write is not retried); one in steady use skips the round trip. Reads
        // never check: they fail over instead.
        let pool = if verify_connections {
            pool.before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > VERIFY_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
        } else {
            pool
        }
        .connect_lazy_with(connect);
        MySql {
            pool,
            label: target.label(),
            track_position: true,
        }
    }

    /// Writes skip reading their replication position (no replicas to wait for).
    pub(super) fn without_positions(mut self) -> Self {
        self.track_position = false;
        self
    }

    /// Where the last write on `conn` landed, when positions are tracked.
    async fn position(&self, conn: &mut sqlx::MySqlConnection) -> Option<Position> {
        if self.track_position {
            last_position(conn).await
        } else {
            None
        }
    }

    pub(super) fn label(&self) -> &str {
        &self.label
    }

    /// Applies the embedded migrations, one API at a time. sqlx's own migration lock asks for
    /// `GET_LOCK(name, -1)`, which MariaDB answers at once with NULL instead of waiting, so two
    /// APIs starting together both applied migration 1; this named lock, with a positive timeout,
    /// serialises them.
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_mysql)?;
        let locked: Option<i64> =
            sqlx::query_scalar("SELECT GET_LOCK('flotilla_todo_migrate', 60)")
                .fetch_one(&mut *conn)
                .await
                .map_err(StoreError::from_mysql)?;
        if locked != Some(1) {
            return Err(StoreError::Unavailable(
                "another API held the migration lock for 60 s".into(),
            ));
        }
        let migrated = MIGRATOR
            .run_direct(None, &mut *conn, false)
            .await
            .map_err(|error| match error {
                sqlx::migrate::MigrateError::Execute(e) => StoreError::from_mysql(e),
                other => StoreError::Other(Box::new(other)),
            });
        let _ = sqlx::query("DO RELEASE_LOCK('flotilla_todo_migrate')")
            .execute(&mut *conn)
            .await;
        migrated
    }

    /// Answers, with the replication position the server has applied (a replica) or written
    /// (the primary).
    pub(super) async fn ping(&self, replica: bool) -> Result<Option<Position>, StoreError> {
        let sql = if replica {
            "SELECT @@gtid_slave_pos"
        } else {
            "SELECT @@gtid_binlog_pos"
        };
        let text: Option<String> = sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_mysql)?;
        Ok(text.and_then(|t| t.parse().ok()))
    }

    pub(super) async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let fetch = query.limit + 1;
        let rows = match query.after {
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM todo WHERE status = ? ORDER BY updated DESC, id DESC LIMIT ?"
                ))
                .bind(query.status.as_str())
                .bind(fetch)
                .fetch_all(&self.pool)
                .await
            }
            Some(Cursor { updated, id }) => {
                // `updated <= ?` gives the index a range to scan; the OR picks the exact position.
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM todo WHERE status = ? AND updated <= ? AND (updated < ? OR id < ?) \
                     ORDER BY updated DESC, id DESC LIMIT ?"
                ))
                .bind(query.status.as_str())
                .bind(datetime(updated))
                .bind(datetime(updated))
                .bind(id)
                .bind(fetch)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(StoreError::from_mysql)?;
        let mut page = PageWriter::new(query.limit);
        for row in &rows {
            if !page
                .push(&todo_ref_from_row(row)?)
                .map_err(|e| StoreError::Other(Box::new(e)))?
            {
                break;
            }
        }
        Ok(page.finish())
    }

    pub(super) async fn get(&self, id: i64) -> Result<Option<Todo>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", columns!(), " FROM todo WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_mysql)?;
        row.as_ref().map(todo_from_row).transpose()
    }

    pub(super) async fn create(
        &self,
        new: &NewTodo,
        now: Timestamp,
    ) -> Result<(Todo, Option<Position>), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_mysql)?;
        let done = sqlx::query(
            "INSERT INTO todo (title, content, status, created, updated) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&new.title)
        .bind(&new.content)
        .bind(new.status.as_str())
        .bind(datetime(now))
        .bind(datetime(now))
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_mysql)?;
        let position = self.position(&mut conn).await;
        let todo = Todo {
            id: i64::try_from(done.last_insert_id()).map_err(|e| StoreError::Other(Box::new(e)))?,
            title: new.title.clone(),
            content: new.content.clone(),
            status: new.status,
            created: now,
            updated: now,
        };
        Ok((todo, position))
    }

    /// Applies `changes`, then reads the row back on the same connection. A concurrent writer may
    /// change or delete the row in between; the answer is then that newer state.
    pub(super) async fn update(
        &self,
        id: i64,
        changes: &Changes,
        now: Timestamp,
    ) -> Result<(Option<Todo>, Option<Position>), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_mysql)?;
        sqlx::query(
            "UPDATE todo SET title = COALESCE(?, title), content = COALESCE(?, content), \
             status = COALESCE(?, status), updated = ? WHERE id = ?",
        )
        .bind(changes.title.as_deref())
        .bind(changes.content.as_deref())
        .bind(changes.status.map(Status::as_str))
        .bind(datetime(now))
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_mysql)?;
        let position = self.position(&mut conn).await;
        let row = sqlx::query(concat!("SELECT ", columns!(), " FROM todo WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::from_mysql)?;
        Ok((row.as_ref().map(todo_from_row).transpose()?, position))
    }

    pub(super) async fn delete(&self, id: i64) -> Result<(bool, Option<Position>), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_mysql)?;
        let done = sqlx::query("DELETE FROM todo WHERE id = ?")
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::from_mysql)?;
        Ok((done.rows_affected() > 0, self.position(&mut conn).await))
    }

    pub(super) async fn seed_if_empty(
        &self,
        rows: &[NewTodo],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_mysql)?;
        // A named lock makes APIs seeding at the same moment take turns: locking reads of an
        // empty table take compatible gap locks, and the two inserts then deadlock.
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK('flotilla_todo_seed', 30)")
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::from_mysql)?;
        if locked != Some(1) {
            return Err(StoreError::Unavailable(
                "another API held the seeding lock for 30 s".into(),
            ));
        }
        let seeded = seed_locked(&mut conn, rows, now).await;
        let _ = sqlx::query("DO RELEASE_LOCK('flotilla_todo_seed')")
            .execute(&mut *conn)
            .await;
        seeded
    }
}

async fn seed_locked(
    conn: &mut sqlx::MySqlConnection,
    rows: &[NewTodo],
    now: Timestamp,
) -> Result<usize, StoreError> {
    let mut tx = conn.begin().await.map_err(StoreError::from_mysql)?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM todo")
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from_mysql)?;
    if count > 0 {
        return Ok(0);
    }
    for row in rows {
        sqlx::query(
            "INSERT INTO todo (title, content, status, created, updated) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&row.title)
        .bind(&row.content)
        .bind(row.status.as_str())
        .bind(datetime(now))
        .bind(datetime(now))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_mysql)?;
    }
    tx.commit().await.map_err(StoreError::from_mysql)?;
    Ok(rows.len())
}

/// The GTID of the last transaction on this connection (MariaDB). `None` on servers without it;
/// read-your-writes then relies on the replica check alone.
async fn last_position(conn: &mut sqlx::MySqlConnection) -> Option<Position> {
    let text: Option<String> = sqlx::query_scalar("SELECT @@last_gtid")
        .fetch_one(conn)
        .await
        .ok()?;
    text.and_then(|t| t.parse().ok())
        .filter(|p: &Position| !p.is_empty())
}

fn decode_error(error: sqlx::Error) -> StoreError {
    StoreError::Other(Box::new(error))
}

/// An item borrowed from a row. The original schema allows NULL content and status: they read as
/// empty content and TODO, as the original API treated them.
fn todo_ref_from_row(row: &MySqlRow) -> Result<TodoRef<'_>, StoreError> {
    let id = match row.try_get::<u32, _>(0) {
        Ok(id) => i64::from(id),
        Err(_) => row.try_get::<i64, _>(0).map_err(decode_error)?,
    };
    let status = match row.try_get::<Option<&str>, _>(3).map_err(decode_error)? {
        None => Status::Todo,
        Some(text) => text.parse().map_err(|e| StoreError::Other(Box::new(e)))?,
    };
    let time = |i: usize| -> Result<Timestamp, StoreError> {
        let at: PrimitiveDateTime = row.try_get(i).map_err(decode_error)?;
        Ok(Timestamp(at.assume_utc().unix_timestamp()))
    };
    Ok(TodoRef {
        id,
        title: row.try_get(1).map_err(decode_error)?,
        content: row
            .try_get::<Option<&str>, _>(2)
            .map_err(decode_error)?
            .unwrap_or(""),
        status,
        created: time(4)?,
        updated: time(5)?,
    })
}

fn todo_from_row(row: &MySqlRow) -> Result<Todo, StoreError> {
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
