-- Articles, topics, tokens, the event outbox, subscriptions and deliveries.
-- Times are RFC 3339 UTC text of fixed width ("2026-11-21T08:00:00.000000Z"), so they sort as text.

CREATE TABLE topics (
    slug        TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE articles (
    id           TEXT PRIMARY KEY,
    guid         TEXT NOT NULL UNIQUE,
    slug         TEXT NOT NULL UNIQUE,
    title        TEXT NOT NULL,
    summary      TEXT NOT NULL,
    content      TEXT NOT NULL,
    content_type TEXT NOT NULL,
    topics       TEXT NOT NULL,            -- JSON array, in the operator's order
    author       TEXT,
    url          TEXT,
    image        TEXT,
    language     TEXT,
    published_at TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    version      INTEGER NOT NULL,
    deleted_at   TEXT
);

CREATE INDEX articles_live_by_date ON articles (published_at DESC, id DESC)
    WHERE deleted_at IS NULL;

-- One row per (live article, topic); tombstones have none. published_at is
-- copied here so a topic feed is one index range scan.
CREATE TABLE article_topics (
    topic        TEXT NOT NULL REFERENCES topics (slug),
    article_id   TEXT NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    published_at TEXT NOT NULL,
    PRIMARY KEY (topic, article_id)
);

CREATE INDEX article_topics_feed ON article_topics (topic, published_at DESC, article_id DESC);
CREATE INDEX article_topics_article ON article_topics (article_id);

-- The transactional outbox and change log: written in the same transaction as the change.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    type       TEXT NOT NULL
               CHECK (type IN ('article.published', 'article.updated', 'article.deleted')),
    article_id TEXT NOT NULL,
    topics     TEXT NOT NULL,              -- JSON array
    data       TEXT NOT NULL,              -- JSON snapshot of the article after the change
    created_at TEXT NOT NULL
);

CREATE INDEX events_article ON events (article_id, seq);

CREATE TABLE tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('operator', 'partner')),
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);

CREATE TABLE subscriptions (
    id                         TEXT PRIMARY KEY,
    kind                       TEXT NOT NULL CHECK (kind IN ('webhook', 'websub')),
    owner                      TEXT,
    url                        TEXT NOT NULL,
    topics                     TEXT NOT NULL,    -- JSON array, ["*"] for every topic
    events                     TEXT NOT NULL,    -- JSON array of event types
    secret                     TEXT,
    previous_secret            TEXT,
    previous_secret_expires_at TEXT,
    status                     TEXT NOT NULL CHECK (status IN ('active', 'pending', 'disabled')),
    description                TEXT NOT NULL DEFAULT '',
    lease_expires_at           TEXT,
    last_success_at            TEXT,
    failing_since              TEXT,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL
);

CREATE INDEX subscriptions_owner ON subscriptions (owner);

CREATE TABLE deliveries (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq          INTEGER NOT NULL REFERENCES events (seq),
    subscription_id    TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    TEXT NOT NULL,
    claimed_until      TEXT,
    claimed_by         TEXT,
    last_status_code   INTEGER,
    last_error         TEXT,
    last_response_body TEXT,
    last_latency_ms    REAL,
    delivered_at       TEXT,
    created_at         TEXT NOT NULL,
    UNIQUE (event_seq, subscription_id)
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, id);
