-- A token's name is unique among live tokens only: once a token is revoked, its name
-- can be given to a new one (the revoked row stays, for the record). SQLite cannot
-- drop a column's UNIQUE, so the table is rebuilt; nothing references it.
CREATE TABLE tokens_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('operator', 'partner')),
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
INSERT INTO tokens_new (id, name, role, token_hash, created_at, last_used_at, revoked_at)
SELECT id, name, role, token_hash, created_at, last_used_at, revoked_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;
