-- Fair dispatch and worker liveness.
-- owner_key: whose share a subscription's deliveries count against ("partner:NAME" for a
-- partner's webhook, "host:HOSTNAME" for a WebSub callback or an operator's webhook);
-- filled in by the storage layer (rows from before this migration at the next open).
ALTER TABLE subscriptions ADD COLUMN owner_key TEXT;
CREATE INDEX subscriptions_owner_key ON subscriptions (owner_key, kind);
CREATE INDEX subscriptions_websub_topic ON subscriptions (topic_url) WHERE kind = 'websub';

-- First attempts ahead of retries: the claim reads due deliveries in this order.
CREATE INDEX deliveries_due_fair ON deliveries (attempts > 0, next_attempt_at, id)
    WHERE status IN ('pending', 'failed');

-- Live processes: each heartbeats; a stale one's claimed deliveries are released.
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
CREATE INDEX deliveries_claimed_by ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL;
