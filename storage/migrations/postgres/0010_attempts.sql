-- Subscription status pages (issue 21): every delivery attempt, and the last
-- verification of intent of each WebSub (callback, topic URL) pair.
--
-- One row per outcome complete_deliveries records, in its one statement. No foreign
-- key to deliveries: an attempt outlives its delivery when the change log is pruned
-- first (its event id then reads as NULL); prune_attempts has its own age. Deleting a
-- subscription deletes its attempts (the cascade).
CREATE TABLE delivery_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     bigint NOT NULL,
    subscription_id text COLLATE "C" NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    attempted_at    timestamptz NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('pending', 'delivered', 'failed', 'dead')),
    succeeded       boolean NOT NULL,
    status_code     integer,
    latency_ms      double precision,
    error           text
);

-- A subscription's attempts newest first; also the cascade's look-up.
CREATE INDEX delivery_attempts_subscription
    ON delivery_attempts (subscription_id, attempted_at, id);
-- prune_attempts: rows are appended in about time order, so a BRIN index finds the
-- old ones for almost nothing on the delivery path (a B-tree would be a third one).
CREATE INDEX delivery_attempts_age ON delivery_attempts USING brin (attempted_at);

-- The last verification of intent per pair, kept whether or not it made a
-- subscription (GET /hub/status shows why one did not).
CREATE TABLE websub_verifications (
    callback    text NOT NULL,
    topic_url   text NOT NULL,
    mode        text NOT NULL CHECK (mode IN ('subscribe', 'unsubscribe')),
    verified_at timestamptz NOT NULL,
    result      text NOT NULL CHECK (result IN ('confirmed', 'not_confirmed', 'denied')),
    detail      text NOT NULL DEFAULT '',
    PRIMARY KEY (callback, topic_url)
);
CREATE INDEX websub_verifications_age ON websub_verifications (verified_at);
