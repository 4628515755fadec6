-- The change log read as an API (issue 21): pruning, its horizon, resync listing.
--
-- The highest event seq ever pruned (0: none): a cursor at or below it may point at
-- events that are gone (the pull API answers 410). One row, kept in a table of its
-- own rather than under a key of `site`: an integer that only moves forward, written
-- in the pruning transaction with a max().
CREATE TABLE event_horizon (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO event_horizon (id, seq) VALUES (1, 0);

-- Pruning stops at the first event with a delivery not yet ended: min(event_seq) of
-- those is one index probe, whatever the backlog of a dead endpoint.
CREATE INDEX deliveries_open_by_event ON deliveries (event_seq)
    WHERE status IN ('pending', 'failed');

-- Articles changed since a time (a partner's resync: GET /api/articles?updated_since=),
-- oldest change first; scheduled ones are never listed.
CREATE INDEX articles_changed ON articles (updated_at, id) WHERE scheduled = 0;
