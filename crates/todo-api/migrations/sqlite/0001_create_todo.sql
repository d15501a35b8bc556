-- The tododb table (id, title up to 188 characters, content, status, created, updated), in
-- SQLite's types. Times are Unix seconds (UTC), the precision of the original DATETIME columns.
-- AUTOINCREMENT keeps ids of deleted rows from being handed out again, as MySQL's AUTO_INCREMENT does.
CREATE TABLE IF NOT EXISTS todo (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    title   TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 188),
    content TEXT    NOT NULL DEFAULT '',
    status  TEXT    NOT NULL DEFAULT 'TODO' CHECK (status IN ('TODO', 'PROGRESS', 'DONE')),
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);

-- Serves `WHERE status = ? ORDER BY updated DESC, id DESC` and its keyset pages.
CREATE INDEX IF NOT EXISTS todo_status_updated ON todo (status, updated, id);
