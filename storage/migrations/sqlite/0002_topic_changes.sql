-- Per-topic change marker for feed caching: the seq and time of the last event
-- that touched an article in (or leaving) the topic.
ALTER TABLE topics ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE topics ADD COLUMN changed_at TEXT;

-- Live articles per topic, kept up to date by every write (counting on read
-- would scan a whole topic).
ALTER TABLE topics ADD COLUMN article_count INTEGER NOT NULL DEFAULT 0;
UPDATE topics SET article_count = (SELECT count(*) FROM article_topics WHERE topic = topics.slug);
