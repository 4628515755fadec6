-- The change log read as an API (issue 21): wake-ups, pruning, its horizon, resync.
--
-- Every statement that inserts events notifies 'syndicate_events' (no payload: the
-- listener reads the head). A notification is delivered at commit, and PostgreSQL
-- folds identical ones of one transaction into one, so a group commit of 200 articles
-- sends one. Listeners: storage/postgres/_event_watch.py.
CREATE FUNCTION syndicate_events_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('syndicate_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION syndicate_events_notify();

-- The highest event seq ever pruned (0: none): a cursor at or below it may point at
-- events that are gone (the pull API answers 410). One row, kept in a table of its
-- own rather than under a key of `site`: a bigint that only moves forward, written in
-- the pruning transaction with greatest().
CREATE TABLE event_horizon (
    id  integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL
);
INSERT INTO event_horizon (id, seq) VALUES (1, 0);

-- Pruning stops at the first event with a delivery not yet ended: min(event_seq) of
-- those is one index probe, whatever the backlog of a dead endpoint.
CREATE INDEX deliveries_open_by_event ON deliveries (event_seq)
    WHERE status IN ('pending', 'failed');

-- Articles changed since a time (a partner's resync: GET /api/articles?updated_since=),
-- oldest change first; scheduled ones are never listed.
CREATE INDEX articles_changed ON articles (updated_at, id) WHERE NOT scheduled;
