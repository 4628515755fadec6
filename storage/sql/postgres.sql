-- Named queries for the PostgreSQL backend; see storage/_sql.py for the format.
-- Placeholders are asyncpg's $1, $2, ...; jsonb values are Python objects
-- (a codec on every connection encodes and decodes them).

-- name: advisory_xact_lock
SELECT pg_advisory_xact_lock($1::bigint);

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL
);

-- name: schema_version
SELECT coalesce(max(version), 0) FROM schema_version;

-- name: record_migration
INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3);

-- name: ping
SELECT 1;

-- name: get_article
SELECT * FROM articles WHERE id = $1;

-- name: get_article_by_slug
SELECT * FROM articles WHERE slug = $1;

-- name: slug_owner
SELECT id FROM articles WHERE slug = $1;

-- name: save_article
INSERT INTO articles (id, guid, slug, title, summary, content, content_type, topics, author,
                      url, image, language, published_at, updated_at, created_at, version,
                      deleted_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (id) DO UPDATE
   SET slug = excluded.slug, title = excluded.title, summary = excluded.summary,
       content = excluded.content, content_type = excluded.content_type,
       topics = excluded.topics, author = excluded.author, url = excluded.url,
       image = excluded.image, language = excluded.language,
       published_at = excluded.published_at, updated_at = excluded.updated_at,
       version = excluded.version, deleted_at = excluded.deleted_at;

-- name: ensure_topics
INSERT INTO topics (slug, title, description, created_at, updated_at)
SELECT slug, title, '', $3, $3
  FROM unnest($1::text[], $2::text[]) AS t (slug, title)
ON CONFLICT (slug) DO NOTHING;

-- name: uncount_article_topics
UPDATE topics SET article_count = article_count - 1
 WHERE slug IN (SELECT topic FROM article_topics WHERE article_id = $1);

-- name: count_article_topics
UPDATE topics SET article_count = article_count + 1 WHERE slug = ANY($1::text[]);

-- name: delete_article_topics
DELETE FROM article_topics WHERE article_id = $1;

-- name: insert_article_topics
INSERT INTO article_topics (topic, article_id, published_at)
SELECT topic, $2, $3 FROM unnest($1::text[]) AS t (topic);

-- name: insert_event
INSERT INTO events (type, article_id, topics, data, created_at)
VALUES ($1, $2, $3, $4, $5)
RETURNING seq;

-- name: list_articles
SELECT * FROM articles
 WHERE deleted_at IS NULL AND (published_at, id) < ($1, $2)
 ORDER BY published_at DESC, id DESC
 LIMIT $3;

-- name: list_articles_in_topic
SELECT a.* FROM article_topics AS t JOIN articles AS a ON a.id = t.article_id
 WHERE t.topic = $1 AND (t.published_at, t.article_id) < ($2, $3)
 ORDER BY t.published_at DESC, t.article_id DESC
 LIMIT $4;

-- name: list_topics
SELECT * FROM topics ORDER BY slug;

-- name: get_topic
SELECT * FROM topics WHERE slug = $1;

-- name: insert_topic
INSERT INTO topics (slug, title, description, created_at, updated_at)
VALUES ($1, $2, $3, $4, $4)
ON CONFLICT (slug) DO NOTHING
RETURNING slug;

-- name: update_topic
UPDATE topics SET title = $2, description = $3, updated_at = $4 WHERE slug = $1;

-- name: list_events
SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2;

-- name: insert_token
INSERT INTO tokens (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4)
RETURNING *;

-- name: get_token_by_hash
SELECT * FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL;

-- name: touch_token
UPDATE tokens SET last_used_at = $1 WHERE id = $2;

-- name: count_tokens
SELECT count(*) FROM tokens WHERE revoked_at IS NULL;

-- name: list_tokens
SELECT * FROM tokens ORDER BY id;

-- name: revoke_token
UPDATE tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL RETURNING *;

-- name: insert_subscription
INSERT INTO subscriptions (id, kind, owner, url, topics, events, secret, status, description,
                           lease_expires_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
RETURNING *;

-- name: get_subscription
SELECT * FROM subscriptions WHERE id = $1;

-- name: insert_deliveries
-- NOT EXISTS spares the identity sequence on re-runs; ON CONFLICT covers races.
WITH created AS (
    INSERT INTO deliveries (event_seq, subscription_id, status, next_attempt_at, created_at)
    SELECT $1, s.sid, 'pending', $3, $3
      FROM unnest($2::text[]) WITH ORDINALITY AS s (sid, n)
     WHERE NOT EXISTS (SELECT 1 FROM deliveries AS d
                        WHERE d.event_seq = $1 AND d.subscription_id = s.sid)
     GROUP BY s.sid
     ORDER BY min(s.n)
    ON CONFLICT (event_seq, subscription_id) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM created;

-- name: get_delivery
SELECT * FROM deliveries WHERE id = $1;

-- name: claim_deliveries
-- SKIP LOCKED: rows another claimer is taking right now are passed over, not
-- waited for; a row updated since our snapshot is re-checked against WHERE.
WITH due AS (
    SELECT id FROM deliveries
     WHERE status IN ('pending', 'failed')
       AND next_attempt_at <= $3
       AND (claimed_until IS NULL OR claimed_until <= $3)
     ORDER BY next_attempt_at, id
     LIMIT $4
       FOR UPDATE SKIP LOCKED
)
UPDATE deliveries AS d
   SET claimed_until = $1, claimed_by = $2
  FROM due
 WHERE d.id = due.id
RETURNING d.*;

-- name: release_delivery
UPDATE deliveries SET claimed_until = NULL, claimed_by = NULL
 WHERE id = $1 AND claimed_by = $2;

-- name: mark_topics_changed
UPDATE topics SET changed_seq = $1, changed_at = $2 WHERE slug = ANY($3::text[]);

-- name: topic_feed_state
SELECT changed_seq AS seq, changed_at, updated_at FROM topics WHERE slug = $1;

-- name: all_feed_state
SELECT seq, created_at AS changed_at, NULL::timestamptz AS updated_at
  FROM events ORDER BY seq DESC LIMIT 1;

-- name: list_articles_after
SELECT * FROM articles
 WHERE deleted_at IS NULL AND (published_at, id) > ($1, $2)
 ORDER BY published_at, id
 LIMIT $3;

-- name: list_articles_in_topic_after
SELECT a.* FROM article_topics AS t JOIN articles AS a ON a.id = t.article_id
 WHERE t.topic = $1 AND (t.published_at, t.article_id) > ($2, $3)
 ORDER BY t.published_at, t.article_id
 LIMIT $4;
