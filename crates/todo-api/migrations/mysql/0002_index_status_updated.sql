-- Serves `WHERE status = ? ORDER BY updated DESC, id DESC` and its keyset pages.
CREATE INDEX IF NOT EXISTS todo_status_updated ON todo (status, updated, id);
