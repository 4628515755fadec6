-- Push delivery: the WebSub hub.topic of a subscription, named fan-out cursors
-- (the last event seq turned into deliveries), and indexes for the delivery verbs.
ALTER TABLE subscriptions ADD COLUMN topic_url TEXT;

CREATE TABLE fanout_cursors (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);

-- A subscription's deliveries by status: "recover since T" and filtered listings.
CREATE INDEX deliveries_subscription_status ON deliveries (subscription_id, status, created_at);

-- Partner listings: one owner's subscriptions in id order.
DROP INDEX subscriptions_owner;
CREATE INDEX subscriptions_owner ON subscriptions (owner, id);

CREATE INDEX subscriptions_websub ON subscriptions (url, topic_url) WHERE kind = 'websub';
