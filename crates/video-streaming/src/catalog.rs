//! The videos' metadata and their viewing history, in SQLite (one file, WAL mode). Queries are
//! small and run on tokio's blocking threads, one connection behind a mutex: the catalog is
//! read once per page or stream, not per byte.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// One video, as the JSON API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Video {
    pub id: String,
    pub title: String,
    /// The object's path in video-storage.
    pub path: String,
    pub size: u64,
    pub content_type: String,
    /// Seconds, when ffprobe could tell.
    pub duration: Option<f64>,
    /// RFC 3339, UTC.
    pub created: String,
    /// The storage path of a JPEG still, when ffmpeg could make one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
    pub views: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the video catalog failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open the video catalog {0}: {1}")]
    Open(String, rusqlite::Error),
}

/// Where a page of the list starts: after this video (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created: String,
    pub id: String,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    connection: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS videos (
  id TEXT PRIMARY KEY,
  title TEXT NOT NULL,
  path TEXT NOT NULL,
  size INTEGER NOT NULL,
  content_type TEXT NOT NULL,
  duration REAL,
  thumbnail TEXT,
  created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS videos_by_created ON videos (created DESC, id DESC);
CREATE TABLE IF NOT EXISTS history (
  video_id TEXT NOT NULL,
  viewed TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_video ON history (video_id);
";

const COLUMNS: &str = "id, title, path, size, content_type, duration, created, thumbnail, \
    (SELECT COUNT(*) FROM history WHERE history.video_id = videos.id)";

fn video(row: &rusqlite::Row<'_>) -> rusqlite::Result<Video> {
    Ok(Video {
        id: row.get(0)?,
        title: row.get(1)?,
        path: row.get(2)?,
        size: row.get::<_, i64>(3)?.max(0) as u64,
        content_type: row.get(4)?,
        duration: row.get(5)?,
        created: row.get(6)?,
        thumbnail: row.get(7)?,
        views: row.get::<_, i64>(8)?.max(0) as u64,
    })
}

impl Catalog {
    /// Opens (creating) the catalog file; `:memory:` for one in memory.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let name = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let connection = Connection::open(path).map_err(|e| CatalogError::Open(name.clone(), e))?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .and_then(|_| connection.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|_| connection.execute_batch(SCHEMA))
            .map_err(|e| CatalogError::Open(name, e))?;
        Ok(Catalog {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, CatalogError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            work(&connection)
        })
        .await
        .map_err(|_| CatalogError::Sqlite(rusqlite::Error::ExecuteReturnedResults))?
        .map_err(CatalogError::from)
    }

    pub async fn insert(&self, video: Video) -> Result<(), CatalogError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO videos (id, title, path, size, content_type, duration, thumbnail, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    video.id,
                    video.title,
                    video.path,
                    video.size as i64,
                    video.content_type,
                    video.duration,
                    video.thumbnail,
                    video.created
                ],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Video>, CatalogError> {
        let id = id.to_string();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM videos WHERE id = ?1"),
                [id],
                video,
            )
            .optional()
        })
        .await
    }

    /// Up to `limit` videos, newest first, after `cursor`; and whether there are more.
    pub async fn list(
        &self,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<(Vec<Video>, bool), CatalogError> {
        self.with(move |c| {
            let take = limit as i64 + 1;
            let mut videos = match cursor {
                None => c
                    .prepare(&format!(
                        "SELECT {COLUMNS} FROM videos ORDER BY created DESC, id DESC LIMIT ?1"
                    ))?
                    .query_map([take], video)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                Some(after) => c
                    .prepare(&format!(
                        "SELECT {COLUMNS} FROM videos WHERE (created, id) < (?1, ?2)
                         ORDER BY created DESC, id DESC LIMIT ?3"
                    ))?
                    .query_map(params![after.created, after.id, take], video)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            let more = videos.len() > limit;
            videos.truncate(limit);
            Ok((videos, more))
        })
        .await
    }

    /// Removes a video and its history; whether there was one.
    pub async fn delete(&self, id: &str) -> Result<bool, CatalogError> {
        let id = id.to_string();
        self.with(move |c| {
            c.execute("DELETE FROM history WHERE video_id = ?1", [&id])?;
            Ok(c.execute("DELETE FROM videos WHERE id = ?1", [&id])? > 0)
        })
        .await
    }

    /// Records one view.
    pub async fn viewed(&self, id: &str, at: &str) -> Result<(), CatalogError> {
        let (id, at) = (id.to_string(), at.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO history (video_id, viewed) VALUES (?1, ?2)",
                [id, at],
            )
            .map(|_| ())
        })
        .await
    }
}
