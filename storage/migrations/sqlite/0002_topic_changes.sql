-- Per-topic change marker for feed caching: the seq and time of the last event
-- that touched an article in (or leaving) the topic.
ALTER TABLE topics ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE topics ADD COLUMN changed_at TEXT;
