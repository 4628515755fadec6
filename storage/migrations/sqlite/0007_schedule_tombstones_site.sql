-- Scheduled articles, the tombstone listing and the site's own settings.
--
-- scheduled: 1 while an article's publication has not been announced (its
-- published_at was in the future when it was written). A scheduled article has no
-- topic rows, counts in no topic and has no event until publish_due announces it.
ALTER TABLE articles ADD COLUMN scheduled INTEGER NOT NULL DEFAULT 0;

CREATE INDEX articles_scheduled ON articles (published_at, id) 
    WHERE scheduled = 1 AND deleted_at IS NULL;

-- Tombstones newest deletion first (list_deleted).
CREATE INDEX articles_deleted ON articles (deleted_at DESC, id DESC)
    WHERE deleted_at IS NOT NULL;

-- Settings that every process of one deployment shares (the public base URL).
CREATE TABLE site (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
