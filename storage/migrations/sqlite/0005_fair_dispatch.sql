-- Fair dispatch and worker liveness.
-- owner_key: whose share a subscription's deliveries count against ("partner:NAME" for a
-- partner's webhook, "callback:HOSTNAME" for WebSub, "host:HOSTNAME" for an operator's);
-- filled in by the storage layer (rows from before this migration at the next open).
ALTER TABLE subscriptions ADD COLUMN owner_key TEXT;
CREATE INDEX subscriptions_owner_key ON subscriptions (owner_key, kind);
CREATE INDEX subscriptions_websub_topic ON subscriptions (topic_url) WHERE kind = 'websub';

-- Claims are made per kind of subscription: a delivery carries its subscription's
-- kind, so that a webhook claim never reads through a WebSub backlog.
ALTER TABLE deliveries ADD COLUMN kind TEXT;
UPDATE deliveries SET kind = (SELECT s.kind FROM subscriptions AS s
                               WHERE s.id = deliveries.subscription_id)
 WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_due_kind ON deliveries (kind, next_attempt_at, id)
    WHERE status IN ('pending', 'failed');
-- A process still on the code before this migration (a rolling upgrade) writes no
-- kind: its rows get their subscription's, or no claim would ever read them.
CREATE TRIGGER deliveries_without_kind AFTER INSERT ON deliveries WHEN NEW.kind IS NULL
BEGIN
    UPDATE deliveries
       SET kind = (SELECT s.kind FROM subscriptions AS s WHERE s.id = NEW.subscription_id)
     WHERE id = NEW.id;
END;

-- WebSub subscriptions are fanned out by a loop of their own, from where the one
-- fan-out was.
INSERT INTO fanout_cursors (name, seq)
SELECT 'deliveries:websub', seq FROM fanout_cursors WHERE name = 'deliveries';

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
