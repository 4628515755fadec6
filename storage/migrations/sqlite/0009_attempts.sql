-- Subscription status pages (issue 21): every delivery attempt, and the last
-- verification of intent of each WebSub (callback, topic URL) pair.
--
-- One row per outcome complete_deliveries records, in the same transaction. No
-- foreign key to deliveries: an attempt outlives its delivery when the change log is
-- pruned first (its event id then reads as NULL); prune_attempts has its own age.
-- Deleting a subscription deletes its attempts (the cascade).
CREATE TABLE delivery_attempts (
    id              INTEGER PRIMARY KEY,
    delivery_id     INTEGER NOT NULL,
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    attempted_at    TEXT NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('pending', 'delivered', 'failed', 'dead')),
    succeeded       INTEGER NOT NULL,
    status_code     INTEGER,
    latency_ms      REAL,
    error           TEXT
);

-- A subscription's attempts newest first (the rowid, last in every SQLite index,
-- breaks ties); also the cascade's look-up.
CREATE INDEX delivery_attempts_subscription ON delivery_attempts (subscription_id, attempted_at);
-- prune_attempts: the oldest, without reading the rest.
CREATE INDEX delivery_attempts_age ON delivery_attempts (attempted_at);

-- The last verification of intent per pair, kept whether or not it made a
-- subscription (GET /hub/status shows why one did not).
CREATE TABLE websub_verifications (
    callback    TEXT NOT NULL,
    topic_url   TEXT NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('subscribe', 'unsubscribe')),
    verified_at TEXT NOT NULL,
    result      TEXT NOT NULL CHECK (result IN ('confirmed', 'not_confirmed', 'denied')),
    detail      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (callback, topic_url)
);
CREATE INDEX websub_verifications_age ON websub_verifications (verified_at);
