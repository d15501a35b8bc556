-- The original tododb table, exactly. IF NOT EXISTS lets the API adopt a database the original
-- tododb scripts created, rows and all.
CREATE TABLE IF NOT EXISTS todo (
    id      INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    title   VARCHAR(188) NOT NULL,
    content TEXT,
    status  ENUM('TODO', 'PROGRESS', 'DONE'),
    created DATETIME NOT NULL,
    updated DATETIME NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
