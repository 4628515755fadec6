-- Articles, topics, tokens, the event outbox, subscriptions and deliveries.
-- Same tables as the SQLite schema. Text keys that are compared or sorted use
-- COLLATE "C" so orderings (and list cursors) match SQLite's byte order on
-- every server, whatever the database's default collation.

CREATE TABLE topics (
    slug        text COLLATE "C" PRIMARY KEY,
    title       text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE articles (
    id           text COLLATE "C" PRIMARY KEY,
    guid         text NOT NULL UNIQUE,
    slug         text COLLATE "C" NOT NULL UNIQUE,
    title        text NOT NULL,
    summary      text NOT NULL,
    content      text NOT NULL,
    content_type text NOT NULL,
    topics       jsonb NOT NULL,            -- array, in the operator's order
    author       text,
    url          text,
    image        text,
    language     text,
    published_at timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    version      integer NOT NULL,
    deleted_at   timestamptz
);

CREATE INDEX articles_live_by_date ON articles (published_at DESC, id DESC)
    WHERE deleted_at IS NULL;

-- One row per (live article, topic); tombstones have none. published_at is
-- copied here so a topic feed is one index range scan.
CREATE TABLE article_topics (
    topic        text COLLATE "C" NOT NULL REFERENCES topics (slug),
    article_id   text COLLATE "C" NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    published_at timestamptz NOT NULL,
    PRIMARY KEY (topic, article_id)
);

CREATE INDEX article_topics_feed ON article_topics (topic, published_at DESC, article_id DESC);
CREATE INDEX article_topics_article ON article_topics (article_id);

-- The transactional outbox and change log: written in the same transaction as
-- the change. Writers serialise on an advisory lock before inserting, so seq
-- order is commit order (see storage/postgres.py).
CREATE TABLE events (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type       text NOT NULL
               CHECK (type IN ('article.published', 'article.updated', 'article.deleted')),
    article_id text COLLATE "C" NOT NULL,
    topics     jsonb NOT NULL,              -- array
    data       jsonb NOT NULL,              -- snapshot of the article after the change
    created_at timestamptz NOT NULL
);

CREATE INDEX events_article ON events (article_id, seq);

CREATE TABLE tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    role         text NOT NULL CHECK (role IN ('operator', 'partner')),
    token_hash   text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE TABLE subscriptions (
    id                         text COLLATE "C" PRIMARY KEY,
    kind                       text NOT NULL CHECK (kind IN ('webhook', 'websub')),
    owner                      text,
    url                        text NOT NULL,
    topics                     jsonb NOT NULL,    -- array, ["*"] for every topic
    events                     jsonb NOT NULL,    -- array of event types
    secret                     text,
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    status                     text NOT NULL CHECK (status IN ('active', 'pending', 'disabled')),
    description                text NOT NULL DEFAULT '',
    lease_expires_at           timestamptz,
    last_success_at            timestamptz,
    failing_since              timestamptz,
    created_at                 timestamptz NOT NULL,
    updated_at                 timestamptz NOT NULL
);

CREATE INDEX subscriptions_owner ON subscriptions (owner);

CREATE TABLE deliveries (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_seq          bigint NOT NULL REFERENCES events (seq),
    subscription_id    text COLLATE "C" NOT NULL
                       REFERENCES subscriptions (id) ON DELETE CASCADE,
    status             text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz NOT NULL,
    claimed_until      timestamptz,
    claimed_by         text,
    last_status_code   integer,
    last_error         text,
    last_response_body text,
    last_latency_ms    double precision,
    delivered_at       timestamptz,
    created_at         timestamptz NOT NULL,
    UNIQUE (event_seq, subscription_id)
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id)
    WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, id);
