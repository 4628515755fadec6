-- Named queries for the SQLite backend; see storage/_sql.py for the format.

-- name: get_article
SELECT * FROM articles WHERE id = ?;

-- name: get_article_by_slug
SELECT * FROM articles WHERE slug = ?;

-- name: slug_owner
SELECT id FROM articles WHERE slug = ?;

-- name: insert_article
INSERT INTO articles (id, guid, slug, title, summary, content, content_type, topics, author,
                      url, image, language, published_at, updated_at, created_at, version,
                      deleted_at)
VALUES (:id, :guid, :slug, :title, :summary, :content, :content_type, :topics, :author,
        :url, :image, :language, :published_at, :updated_at, :created_at, :version,
        :deleted_at);

-- name: update_article
UPDATE articles
   SET slug = :slug, title = :title, summary = :summary, content = :content,
       content_type = :content_type, topics = :topics, author = :author, url = :url,
       image = :image, language = :language, published_at = :published_at,
       updated_at = :updated_at, version = :version, deleted_at = :deleted_at
 WHERE id = :id;

-- name: ensure_topic
INSERT INTO topics (slug, title, description, created_at, updated_at)
VALUES (?, ?, '', ?, ?)
ON CONFLICT (slug) DO NOTHING;

-- name: uncount_article_topics
UPDATE topics SET article_count = article_count - 1
 WHERE slug IN (SELECT topic FROM article_topics WHERE article_id = ?);

-- name: count_article_topics
UPDATE topics SET article_count = article_count + 1
 WHERE slug IN (SELECT value FROM json_each(?));

-- name: delete_article_topics
DELETE FROM article_topics WHERE article_id = ?;

-- name: insert_article_topic
INSERT INTO article_topics (topic, article_id, published_at) VALUES (?, ?, ?);

-- name: insert_event
INSERT INTO events (type, article_id, topics, data, created_at)
VALUES (?, ?, ?, ?, ?)
RETURNING seq;

-- name: list_articles
SELECT * FROM articles
 WHERE deleted_at IS NULL AND (published_at, id) < (?, ?)
 ORDER BY published_at DESC, id DESC
 LIMIT ?;

-- name: list_articles_in_topic
SELECT a.* FROM article_topics AS t JOIN articles AS a ON a.id = t.article_id
 WHERE t.topic = ? AND (t.published_at, t.article_id) < (?, ?)
 ORDER BY t.published_at DESC, t.article_id DESC
 LIMIT ?;

-- name: list_topics
SELECT * FROM topics ORDER BY slug;

-- name: get_topic
SELECT * FROM topics WHERE slug = ?;

-- name: upsert_topic
INSERT INTO topics (slug, title, description, created_at, updated_at)
VALUES (:slug, :title, :description, :now, :now)
ON CONFLICT (slug) DO UPDATE SET title = excluded.title, description = excluded.description,
                                 updated_at = excluded.updated_at;

-- name: list_events
SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?;

-- name: insert_token
INSERT INTO tokens (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)
RETURNING *;

-- name: get_token_by_hash
SELECT * FROM tokens WHERE token_hash = ? AND revoked_at IS NULL;

-- name: touch_token
UPDATE tokens SET last_used_at = ? WHERE id = ?;

-- name: count_tokens
SELECT count(*) FROM tokens WHERE revoked_at IS NULL;

-- name: list_tokens
SELECT * FROM tokens ORDER BY id;

-- name: revoke_token
UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL RETURNING *;

-- name: insert_subscription
INSERT INTO subscriptions (id, kind, owner, url, topics, events, secret, status, description,
                           lease_expires_at, created_at, updated_at)
VALUES (:id, :kind, :owner, :url, :topics, :events, :secret, :status, :description,
        :lease_expires_at, :now, :now)
RETURNING *;

-- name: get_subscription
SELECT * FROM subscriptions WHERE id = ?;

-- name: insert_delivery
INSERT INTO deliveries (event_seq, subscription_id, status, next_attempt_at, created_at)
VALUES (?, ?, 'pending', ?, ?)
ON CONFLICT (event_seq, subscription_id) DO NOTHING;

-- name: get_delivery
SELECT * FROM deliveries WHERE id = ?;

-- name: claim_deliveries
UPDATE deliveries
   SET claimed_until = :until, claimed_by = :worker
 WHERE id IN (SELECT id FROM deliveries
               WHERE status IN ('pending', 'failed')
                 AND next_attempt_at <= :now
                 AND (claimed_until IS NULL OR claimed_until <= :now)
               ORDER BY next_attempt_at, id
               LIMIT :limit)
RETURNING *;

-- name: release_delivery
UPDATE deliveries SET claimed_until = NULL, claimed_by = NULL
 WHERE id = ? AND claimed_by = ?;

-- name: mark_topics_changed
UPDATE topics SET changed_seq = ?, changed_at = ?
 WHERE slug IN (SELECT value FROM json_each(?));

-- name: topic_feed_state
SELECT changed_seq AS seq, changed_at, updated_at FROM topics WHERE slug = ?;

-- name: all_feed_state
SELECT seq, created_at AS changed_at, NULL AS updated_at FROM events ORDER BY seq DESC LIMIT 1;

-- name: list_articles_after
SELECT * FROM articles
 WHERE deleted_at IS NULL AND (published_at, id) > (?, ?)
 ORDER BY published_at, id
 LIMIT ?;

-- name: list_articles_in_topic_after
SELECT a.* FROM article_topics AS t JOIN articles AS a ON a.id = t.article_id
 WHERE t.topic = ? AND (t.published_at, t.article_id) > (?, ?)
 ORDER BY t.published_at, t.article_id
 LIMIT ?;
