-- Named queries for the SQLite backend; see storage/_sql.py for the format.

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

-- name: schema_version
SELECT coalesce(max(version), 0) FROM schema_version;

-- name: record_migration
INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?);

-- name: ping
SELECT 1;

-- name: get_article
SELECT * FROM articles WHERE id = ?;

-- name: get_article_by_slug
SELECT * FROM articles WHERE slug = ?;

-- name: articles_and_slug_owners.articles
SELECT * FROM articles WHERE id IN (SELECT value FROM json_each(?));
-- name: articles_and_slug_owners.slug_owners
SELECT slug, id FROM articles WHERE slug IN (SELECT value FROM json_each(?));
-- name: slugs_in_ranges
-- For each base in the JSON array ?, the base and all its base-N forms (and a few
-- more, which only make the answer larger): [base, base.), as "." sorts right after
-- "-". One range scan of the slug index per base, all in one statement.
SELECT a.slug, a.id
  FROM json_each(?) AS b
  JOIN articles AS a ON a.slug >= b.value AND a.slug < b.value || '.';
-- name: save_article
INSERT INTO articles (id, guid, slug, title, summary, content, content_type, topics, author,
                      url, image, language, published_at, updated_at, created_at, version,
                      deleted_at, scheduled)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE
   SET slug = excluded.slug, title = excluded.title, summary = excluded.summary,
       content = excluded.content, content_type = excluded.content_type,
       topics = excluded.topics, author = excluded.author, url = excluded.url,
       image = excluded.image, language = excluded.language,
       published_at = excluded.published_at, updated_at = excluded.updated_at,
       version = excluded.version, deleted_at = excluded.deleted_at,
       scheduled = excluded.scheduled;
-- name: write_articles.last_event_seq
SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0);
-- name: write_articles.insert_events
-- Under the write lock the next seqs are known: write_articles.last_event_seq + 1, + 2, ...
INSERT INTO events (seq, id, type, article_id, topics, data, created_at, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?);
-- name: write_articles.insert_events_from_articles
-- One event per article of ?2 (a JSON array of [event id, type, article id], the article
-- ids distinct), seqs from ?1, the snapshot made by SQLite from the article row just
-- written: the same text as dumps_text(Article.to_json()) (stored times are format_time
-- text; SQLite and orjson escape strings alike, pinned by tests/test_sqlite_events.py).
-- SQLite builds it with the GIL released, and the bodies are not bound a second time.
-- Only for writes without a webhook body to store (no renderer set).
INSERT INTO events (seq, id, type, article_id, topics, data, created_at)
SELECT ?1 + e.key, json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]'),
       a.id, a.topics,
       json_object('id', a.id, 'guid', a.guid, 'slug', a.slug, 'title', a.title,
                   'summary', a.summary, 'content', a.content,
                   'content_type', a.content_type, 'topics', json(a.topics),
                   'author', a.author, 'url', a.url, 'image', a.image,
                   'language', a.language, 'published_at', a.published_at,
                   'updated_at', a.updated_at, 'created_at', a.created_at,
                   'version', a.version, 'deleted_at', a.deleted_at),
       a.updated_at
  FROM json_each(?2) AS e CROSS JOIN articles AS a ON a.id = json_extract(e.value, '$[2]')
 ORDER BY e.key;
-- name: write_articles.add_topic_counts
INSERT INTO topics (slug, title, description, created_at, updated_at, article_count,
                    changed_seq, changed_at)
VALUES (?, ?, '', ?, ?, ?, ?, ?)
ON CONFLICT (slug) DO UPDATE SET article_count = article_count + excluded.article_count,
                                 changed_seq = excluded.changed_seq,
                                 changed_at = excluded.changed_at;
-- name: write_articles.mark_topics_changed
UPDATE topics SET changed_seq = ?, changed_at = ?
 WHERE slug IN (SELECT value FROM json_each(?));
-- name: write_articles.delete_article_topics
DELETE FROM article_topics WHERE article_id IN (SELECT value FROM json_each(?));

-- name: write_articles.insert_article_topics
INSERT INTO article_topics (topic, article_id, published_at) VALUES (?, ?, ?);

-- name: list_articles
SELECT * FROM articles
 WHERE deleted_at IS NULL AND scheduled = 0 AND (published_at, id) < (?, ?)
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

-- name: insert_topic
INSERT INTO topics (slug, title, description, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?4)
ON CONFLICT (slug) DO NOTHING
RETURNING slug;

-- name: update_topic
UPDATE topics SET title = ?2, description = ?3, updated_at = ?4 WHERE slug = ?1;

-- name: list_events
SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?;

-- name: list_event_items
-- The body as a BLOB: the driver hands over its bytes as they are.
SELECT seq, id, type, topics, CAST(body AS BLOB) FROM events WHERE seq > ? ORDER BY seq LIMIT ?;

-- name: list_event_heads
SELECT seq, id, type, article_id, topics, '{}' AS data, created_at
FROM events WHERE seq > ? ORDER BY seq LIMIT ?;

-- name: insert_token
INSERT INTO tokens (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)
RETURNING *;

-- name: insert_token.last_of_name
SELECT role, revoked_at FROM tokens WHERE name = ? ORDER BY id DESC LIMIT 1;

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

-- name: revoke_token.portal_sessions
DELETE FROM portal_sessions WHERE token_id = ?;

-- name: revoke_token.portal_links
-- The unused ones; a used link is no key to anything and goes with prune_portal.
DELETE FROM portal_links WHERE token_id = ? AND used_at IS NULL;

-- name: get_live_token
SELECT * FROM tokens WHERE name = ? AND revoked_at IS NULL;

-- name: revoke_token.last_revoked
SELECT * FROM tokens WHERE name = ? AND revoked_at IS NOT NULL
 ORDER BY revoked_at DESC, id DESC LIMIT 1;

-- name: insert_subscription
INSERT INTO subscriptions (id, kind, owner, url, topics, events, secret, status, description,
                           lease_expires_at, topic_url, created_at, updated_at, owner_key)
VALUES (:id, :kind, :owner, :url, :topics, :events, :secret, :status, :description,
        :lease_expires_at, :topic_url, :now, :now, :owner_key)
RETURNING *;

-- name: subscriptions_without_owner_key
SELECT id, kind, owner, url FROM subscriptions WHERE owner_key IS NULL;

-- name: set_owner_key
UPDATE subscriptions SET owner_key = ? WHERE id = ?;

-- name: set_host_owner_key
-- After a URL change: only subscriptions shared out by host follow it.
UPDATE subscriptions SET owner_key = ? WHERE id = ? AND (kind = 'websub' OR owner IS NULL)
RETURNING *;

-- name: count_websub_subscriptions
-- With "x IS NULL OR" filters SQLite's plan scans (it is made once, whatever the
-- values): one statement per filter, each an index search.
SELECT count(*) FROM subscriptions WHERE kind = 'websub';

-- name: count_websub_subscriptions_of_owner
SELECT count(*) FROM subscriptions
 WHERE owner_key = :owner_key AND kind = 'websub'
   AND (:topic_url IS NULL OR topic_url = :topic_url);

-- name: count_websub_subscriptions_of_topic
SELECT count(*) FROM subscriptions WHERE kind = 'websub' AND topic_url = :topic_url;

-- name: get_subscription
SELECT * FROM subscriptions WHERE id = ?;

-- name: find_websub_subscription
SELECT * FROM subscriptions WHERE kind = 'websub' AND url = ? AND topic_url = ?;

-- name: insert_deliveries
-- One for each subscription id of the JSON array ?2 (a delivery already made is kept).
-- WHERE true: an INSERT ... SELECT with an upsert clause needs a WHERE to parse.
INSERT INTO deliveries (event_seq, subscription_id, kind, status, next_attempt_at, created_at)
SELECT ?1, s.value, (SELECT kind FROM subscriptions WHERE id = s.value), 'pending', ?3, ?3
  FROM json_each(?2) AS s
 WHERE true
 ORDER BY s.key
ON CONFLICT (event_seq, subscription_id) DO NOTHING;

-- name: get_delivery
SELECT * FROM deliveries WHERE id = ?;

-- name: claim_deliveries.due
-- The ids to claim, as one JSON array (one step: see storage/sqlite/_bulk.py), shared
-- out between owners. Of the :scan longest-due deliveries of :kind whose owner has
-- room, each owner's are ranked (first attempts ahead of retries, then oldest first),
-- at most :rooms[owner] (default :per_owner) of each, the first of every owner before
-- the second of any.
-- The rooms are materialized first, so that SQLite indexes them (json_each has no
-- index: joined directly, it was scanned once per delivery row, under the write lock).
WITH rooms (key, value) AS MATERIALIZED (SELECT key, value FROM json_each(:rooms))
SELECT json_group_array(id) FROM (
    SELECT id FROM (
        SELECT id, retry, next_attempt_at, room,
               row_number() OVER (PARTITION BY owner_key
                                  ORDER BY retry, next_attempt_at, id) AS rank
          FROM (SELECT d.id, d.attempts > 0 AS retry, d.next_attempt_at, s.owner_key,
                       coalesce(r.value, :per_owner) AS room
                  FROM deliveries AS d
                  JOIN subscriptions AS s ON s.id = d.subscription_id
                  LEFT JOIN rooms AS r ON r.key = s.owner_key
                 WHERE d.kind = :kind
                   AND d.status IN ('pending', 'failed')
                   AND d.next_attempt_at <= :now
                   AND (d.claimed_until IS NULL OR d.claimed_until <= :now)
                   AND coalesce(r.value, 1) > 0
                 ORDER BY d.next_attempt_at, d.id
                 LIMIT :scan))
     WHERE rank <= room
     ORDER BY rank, retry, next_attempt_at, id
     LIMIT :limit);
-- name: claim_deliveries
UPDATE deliveries SET claimed_until = :until, claimed_by = :worker
 WHERE id IN (SELECT value FROM json_each(:ids));
-- name: claim_deliveries.claimed
SELECT * FROM deliveries WHERE id IN (SELECT value FROM json_each(?));

-- name: release_delivery
UPDATE deliveries SET claimed_until = NULL, claimed_by = NULL
 WHERE id = ? AND claimed_by = ?;

-- name: sqlite_data_version
PRAGMA data_version;

-- name: topic_feed_state
SELECT changed_seq AS seq, changed_at, updated_at FROM topics WHERE slug = ?;

-- name: all_feed_state
SELECT seq, created_at AS changed_at, NULL AS updated_at FROM events ORDER BY seq DESC LIMIT 1;

-- name: list_articles_after
SELECT * FROM articles
 WHERE deleted_at IS NULL AND scheduled = 0 AND (published_at, id) > (?, ?)
 ORDER BY published_at, id
 LIMIT ?;

-- name: list_articles_in_topic_after
SELECT a.* FROM article_topics AS t JOIN articles AS a ON a.id = t.article_id
 WHERE t.topic = ? AND (t.published_at, t.article_id) > (?, ?)
 ORDER BY t.published_at, t.article_id
 LIMIT ?;

-- name: get_subscriptions
SELECT * FROM subscriptions WHERE id IN (SELECT value FROM json_each(?));

-- name: list_subscriptions
SELECT * FROM subscriptions
 WHERE id > :after_id AND (:kind IS NULL OR kind = :kind)
 ORDER BY id
 LIMIT :limit;

-- name: list_owner_subscriptions
SELECT * FROM subscriptions
 WHERE owner = :owner AND id > :after_id AND (:kind IS NULL OR kind = :kind)
 ORDER BY id
 LIMIT :limit;

-- name: list_active_subscriptions
SELECT * FROM subscriptions
 WHERE status = 'active' AND (lease_expires_at IS NULL OR lease_expires_at > ?1)
   AND (?2 IS NULL OR kind = ?2)
 ORDER BY id;

-- name: update_subscription
-- A template: the caller fills in one "column = :column, " per changed column,
-- with names taken from SUBSCRIPTION_MUTABLE only, never from its input.
UPDATE subscriptions SET {assignments}updated_at = :now WHERE id = :id
RETURNING *;

-- name: delete_subscription
DELETE FROM subscriptions WHERE id = ? RETURNING id;

-- name: fan_out
-- ?1: a JSON array of [event seq, subscription id] pairs, created in that order.
-- Pairs whose subscription was deleted meanwhile are skipped, not an error.
INSERT INTO deliveries (event_seq, subscription_id, kind, status, next_attempt_at, created_at)
SELECT json_extract(pair.value, '$[0]'), s.id, s.kind, 'pending', ?2, ?2
  FROM json_each(?1) AS pair
  JOIN subscriptions AS s ON s.id = json_extract(pair.value, '$[1]')
 WHERE true  -- (needed before ON CONFLICT after a join)
 ORDER BY pair.key
ON CONFLICT (event_seq, subscription_id) DO NOTHING;

-- name: fan_out_events.subscriptions
-- The subscriptions one step of a fan-out looks at: the next :limit of kind :kind
-- after id :after_subscription that are active at :now.
SELECT id, kind, topics, events, created_at
  FROM subscriptions
 WHERE kind = :kind AND status = 'active'
   AND (lease_expires_at IS NULL OR lease_expires_at > :now)
   AND id > :after_subscription
 ORDER BY id
 LIMIT :limit

-- name: fan_out_events.looked_at
SELECT count(*), max(id) FROM ({subscriptions});

-- name: fan_out_events
-- One step of a fan-out, set-based: events :after < seq <= :up_to against those
-- subscriptions; a pair is made when the subscription is not newer than the event
-- and wants its type and one of its topics (webhooks.matches).
INSERT INTO deliveries (event_seq, subscription_id, kind, status, next_attempt_at, created_at)
SELECT e.seq, s.id, s.kind, 'pending', :now, :now
  FROM ({subscriptions}) AS s
  JOIN events AS e ON e.seq > :after AND e.seq <= :up_to AND s.created_at <= e.created_at
 WHERE (json_array_length(s.events) = 0
        OR EXISTS (SELECT 1 FROM json_each(s.events) AS t WHERE t.value = e.type))
   AND EXISTS (SELECT 1 FROM json_each(s.topics) AS t
                WHERE t.value = '*' OR t.value IN (SELECT value FROM json_each(e.topics)))
 ORDER BY e.seq, s.id
ON CONFLICT (event_seq, subscription_id) DO NOTHING;

-- name: move_cursor
INSERT INTO fanout_cursors (name, seq) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET seq = max(seq, excluded.seq);

-- name: get_cursor
SELECT seq FROM fanout_cursors WHERE name = ?;

-- name: get_events
SELECT * FROM events WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq;

-- name: get_event_ids
SELECT seq, id FROM events WHERE seq IN (SELECT value FROM json_each(?));

-- name: list_deliveries
SELECT * FROM deliveries
 WHERE subscription_id = :subscription_id AND id < :before_id
 ORDER BY id DESC
 LIMIT :limit;

-- name: list_deliveries_with_status
SELECT * FROM deliveries
 WHERE subscription_id = :subscription_id AND status = :status AND id < :before_id
 ORDER BY id DESC
 LIMIT :limit;

-- name: list_deliveries.filtered
-- The portal's filters; without them list_deliveries(_with_status) reads the index
-- alone. The event's type is the one column read from events.
SELECT d.* FROM deliveries AS d
 WHERE d.subscription_id = :subscription_id AND d.id < :before_id
   AND (:status IS NULL OR d.status = :status)
   AND (:since IS NULL OR d.created_at >= :since)
   AND (:until IS NULL OR d.created_at < :until)
   AND (:event_type IS NULL
        OR EXISTS (SELECT 1 FROM events AS e WHERE e.seq = d.event_seq AND e.type = :event_type))
 ORDER BY d.id DESC
 LIMIT :limit;

-- name: list_failing_subscriptions
-- Index subscriptions_failing.
SELECT * FROM subscriptions
 WHERE failing_since IS NOT NULL
 ORDER BY failing_since, id
 LIMIT ?;

-- name: complete_deliveries.owners
-- {delivery id: subscription id} as one JSON object.
SELECT json_group_object(id, subscription_id) FROM deliveries
 WHERE id IN (SELECT value FROM json_each(?));

-- name: complete_deliveries
-- :outcomes: a JSON array of [id, status, next_attempt_at, status_code, error,
-- response_body, latency_ms, claimed_until], each id once; all written in one step.
-- Only the claim the attempt was made under (still :worker's, with the lease it was
-- claimed with; none given: any of :worker's) takes the status, due time, delivered
-- time and the end of the lease: a delivery retried meanwhile, claimed again, or
-- whose lease another worker took over keeps them; the attempt is counted and logged.
UPDATE deliveries
   SET attempts = attempts + 1,
       status = CASE WHEN held THEN json_extract(o.value, '$[1]') ELSE status END,
       next_attempt_at = CASE WHEN held
                              THEN coalesce(json_extract(o.value, '$[2]'), next_attempt_at)
                              ELSE next_attempt_at END,
       last_status_code = json_extract(o.value, '$[3]'),
       last_error = json_extract(o.value, '$[4]'),
       last_response_body = json_extract(o.value, '$[5]'),
       last_latency_ms = json_extract(o.value, '$[6]'),
       delivered_at = CASE WHEN held AND json_extract(o.value, '$[1]') = 'delivered' THEN :now
                           ELSE delivered_at END,
       claimed_until = CASE WHEN held THEN NULL ELSE claimed_until END,
       claimed_by = CASE WHEN held THEN NULL ELSE claimed_by END
  FROM (SELECT o.value, d.id,
               d.claimed_by = :worker
               AND (json_extract(o.value, '$[7]') IS NULL
                    OR d.claimed_until = json_extract(o.value, '$[7]')) AS held
          FROM json_each(:outcomes) AS o
          JOIN deliveries AS d ON d.id = json_extract(o.value, '$[0]')) AS o
 WHERE deliveries.id = o.id;

-- name: complete_deliveries.subscriptions_succeeded
UPDATE subscriptions SET last_success_at = ?, failing_since = NULL
 WHERE id IN (SELECT value FROM json_each(?));

-- name: complete_deliveries.subscriptions_failed
UPDATE subscriptions SET failing_since = coalesce(failing_since, ?)
 WHERE id IN (SELECT value FROM json_each(?));

-- name: disable_failing_subscriptions
UPDATE subscriptions SET status = 'disabled', updated_at = :now
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND kind = 'webhook' AND status = 'active' AND failing_since <= :cutoff
RETURNING id;

-- name: retry_delivery
UPDATE deliveries
   SET status = 'pending', next_attempt_at = ?, claimed_until = NULL, claimed_by = NULL
 WHERE id = ?
RETURNING *;

-- name: recover_deliveries
UPDATE deliveries
   SET status = 'pending', next_attempt_at = :now, claimed_until = NULL, claimed_by = NULL
 WHERE subscription_id = :subscription_id AND status IN ('failed', 'dead')
   AND created_at >= :since;

-- name: delivery_stats
SELECT count(*) AS pending,
       count(*) FILTER (WHERE next_attempt_at <= ?) AS due,
       min(created_at) AS oldest_pending_at
  FROM deliveries
 WHERE status IN ('pending', 'failed');

-- name: defer_deliveries
-- Back to the queue, due later, no attempt counted; only while still ours.
UPDATE deliveries SET next_attempt_at = ?, claimed_until = NULL, claimed_by = NULL
 WHERE id IN (SELECT value FROM json_each(?)) AND claimed_by = ?;

-- name: write_articles.unindex_articles
-- The topics of the articles in the JSON array ?3 lose one count per article.
UPDATE topics SET article_count = article_count - gone.articles, changed_seq = ?1,
                  changed_at = ?2
  FROM (SELECT topic, count(*) AS articles FROM article_topics
         WHERE article_id IN (SELECT value FROM json_each(?3)) GROUP BY topic) AS gone
 WHERE topics.slug = gone.topic;

-- name: register_worker
INSERT INTO workers (id, hostname, pid, kind, started_at, heartbeat_at)
VALUES (:id, :hostname, :pid, :kind, :now, :now)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at;

-- name: heartbeat_worker
UPDATE workers SET heartbeat_at = ? WHERE id = ? RETURNING id;

-- name: unregister_worker
DELETE FROM workers WHERE id = ?;

-- name: release_workers.dead
-- The workers to release: silent since :stale_before, or named dead in :dead (a JSON
-- array), never :keep.
SELECT id FROM workers
 WHERE (heartbeat_at < :stale_before OR id IN (SELECT value FROM json_each(:dead)))
   AND id <> :keep;

-- name: release_workers.count_claims
SELECT claimed_by, count(*) FROM deliveries
 WHERE claimed_by IN (SELECT value FROM json_each(?))
 GROUP BY claimed_by;

-- name: release_workers.release_claims
UPDATE deliveries SET claimed_until = NULL, claimed_by = NULL
 WHERE claimed_by IN (SELECT value FROM json_each(?));

-- name: release_workers.delete_workers
DELETE FROM workers WHERE id IN (SELECT value FROM json_each(?));

-- name: list_workers
SELECT w.*, (SELECT count(*) FROM deliveries AS d
              WHERE d.claimed_by = w.id AND d.claimed_until > :now) AS held
  FROM workers AS w
 ORDER BY w.started_at, w.id;

-- name: list_deleted
-- Announced tombstones (a scheduled article's deletion was never announced).
SELECT * FROM articles
 WHERE deleted_at IS NOT NULL AND deleted_at >= ? AND scheduled = 0
 ORDER BY deleted_at DESC, id DESC
 LIMIT ?;

-- name: list_deleted_in_topic
SELECT * FROM articles
 WHERE deleted_at IS NOT NULL AND deleted_at >= ?2 AND scheduled = 0
   AND EXISTS (SELECT 1 FROM json_each(articles.topics) WHERE value = ?1)
 ORDER BY deleted_at DESC, id DESC
 LIMIT ?3;

-- name: due_articles
SELECT * FROM articles
 WHERE scheduled = 1 AND deleted_at IS NULL AND published_at <= ?
 ORDER BY published_at, id
 LIMIT ?;

-- name: next_scheduled
SELECT min(published_at) FROM articles WHERE scheduled = 1 AND deleted_at IS NULL;

-- name: get_site_setting
SELECT value FROM site WHERE key = ?;

-- name: claim_site_setting
INSERT INTO site (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING;

-- name: set_site_setting
INSERT INTO site (key, value, updated_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at;

-- name: list_scheduled
-- Scheduled (not deleted) articles newest first, for the operator: ?1 a topic or NULL.
SELECT * FROM articles
 WHERE scheduled = 1 AND deleted_at IS NULL AND (published_at, id) < (?2, ?3)
   AND (?1 IS NULL OR EXISTS (SELECT 1 FROM json_each(articles.topics) WHERE value = ?1))
 ORDER BY published_at DESC, id DESC
 LIMIT ?4;

-- name: search_articles
-- Live and scheduled articles whose title contains :pattern (escaped with '\' by the
-- caller; LIKE ignores the case of ASCII letters). No index can serve a "contains":
-- the table is read, title first (the long content is not).
SELECT * FROM articles
 WHERE deleted_at IS NULL AND title LIKE '%' || :pattern || '%' ESCAPE '\'
   AND (:topic IS NULL OR EXISTS (SELECT 1 FROM json_each(articles.topics) WHERE value = :topic))
 ORDER BY published_at DESC, id DESC
 LIMIT :limit;

-- ---- change log (issue 21) ----

-- name: find_event
SELECT seq, id, type, article_id, topics, '{}' AS data, created_at FROM events WHERE id = ?;

-- name: event_horizon
SELECT seq FROM event_horizon;

-- name: list_changed_articles
-- Changed strictly after (?1, ?2) = (updated_at, id), oldest change first; tombstones
-- included (a deletion sets updated_at), scheduled articles never (index articles_changed).
SELECT * FROM articles
 WHERE scheduled = 0 AND (updated_at, id) > (?1, ?2)
 ORDER BY updated_at, id
 LIMIT ?3;

-- name: prune_events.bound
-- The last seq that prune_events may delete (NULL: none, or the log is empty): the
-- lowest of
--   the seq before the first of the :limit oldest events created at or after
--   :before (else the last of those :limit),
--   the seq before the first event with a delivery not yet ended,
--   the lowest fan-out cursor (every event up to it is fanned out; no cursor: no
--   fan-out has run, and none is waiting),
--   the seq before the last event (the newest stays: it is the head, feed_state).
-- Each term is one index probe, or a walk of at most :limit rows of the primary key.
-- SQLite's min() of several arguments is NULL when any is.
WITH head AS (SELECT seq, created_at FROM events ORDER BY seq LIMIT :limit)
SELECT min(coalesce((SELECT min(seq) FROM head WHERE created_at >= :before) - 1,
                    (SELECT max(seq) FROM head)),
           coalesce((SELECT min(event_seq) FROM deliveries
                      WHERE status IN ('pending', 'failed')) - 1, :top),
           coalesce((SELECT min(seq) FROM fanout_cursors), :top),
           (SELECT max(seq) FROM events) - 1);

-- name: prune_events.deliveries
DELETE FROM deliveries WHERE event_seq <= ?;

-- name: prune_events
DELETE FROM events WHERE seq <= ?;

-- name: prune_events.horizon
UPDATE event_horizon SET seq = max(seq, ?);

-- ---- attempts and verifications (issue 21) ----

-- name: complete_deliveries.record_attempts
-- :attempts: a JSON array of [delivery id, subscription id, outcome, succeeded,
-- status_code, latency_ms, error, response_body, sent_at], one per outcome recorded,
-- in order.
INSERT INTO delivery_attempts (delivery_id, subscription_id, attempted_at, outcome, succeeded,
                               status_code, latency_ms, error, response_body, sent_at)
SELECT json_extract(a.value, '$[0]'), json_extract(a.value, '$[1]'), :now,
       json_extract(a.value, '$[2]'), json_extract(a.value, '$[3]'),
       json_extract(a.value, '$[4]'), json_extract(a.value, '$[5]'),
       json_extract(a.value, '$[6]'), json_extract(a.value, '$[7]'),
       json_extract(a.value, '$[8]')
  FROM json_each(:attempts) AS a
 ORDER BY a.key;

-- name: list_attempts
-- Newest first, with the event id and type of each (NULL once its delivery was pruned).
SELECT a.id, a.delivery_id, a.subscription_id, a.attempted_at, a.outcome, a.succeeded,
       a.status_code, a.latency_ms, a.error, a.response_body, a.sent_at,
       e.id AS event_id, e.type AS event_type
  FROM delivery_attempts AS a
  LEFT JOIN deliveries AS d ON d.id = a.delivery_id
  LEFT JOIN events AS e ON e.seq = d.event_seq
 WHERE a.subscription_id = :subscription_id AND a.attempted_at >= :since
 ORDER BY a.attempted_at DESC, a.id DESC
 LIMIT :limit;

-- name: list_attempts.of_delivery
-- One delivery's attempts, found in its subscription's (index
-- delivery_attempts_subscription) no earlier than an hour before the delivery was
-- made (another process's clock may be behind), not by an index of their own: that
-- would be one more B-tree written per attempt, for a page seldom read. A pruned
-- delivery's attempts are looked for in all of its subscription's.
SELECT a.id, a.delivery_id, a.subscription_id, a.attempted_at, a.outcome, a.succeeded,
       a.status_code, a.latency_ms, a.error, a.response_body, a.sent_at,
       e.id AS event_id, e.type AS event_type
  FROM delivery_attempts AS a
  LEFT JOIN deliveries AS d ON d.id = a.delivery_id
  LEFT JOIN events AS e ON e.seq = d.event_seq
 WHERE a.subscription_id = :subscription_id
   AND a.attempted_at >= max(:since, coalesce(
           (SELECT strftime('%Y-%m-%dT%H:%M:%S.000000Z', created_at, '-1 hour')
              FROM deliveries WHERE id = :delivery_id), ''))
   AND a.delivery_id = :delivery_id
 ORDER BY a.attempted_at DESC, a.id DESC
 LIMIT :limit;

-- name: get_attempt
SELECT a.id, a.delivery_id, a.subscription_id, a.attempted_at, a.outcome, a.succeeded,
       a.status_code, a.latency_ms, a.error, a.response_body, a.sent_at,
       e.id AS event_id, e.type AS event_type
  FROM delivery_attempts AS a
  LEFT JOIN deliveries AS d ON d.id = a.delivery_id
  LEFT JOIN events AS e ON e.seq = d.event_seq
 WHERE a.id = ?;

-- name: count_attempts
-- Buckets by the whole seconds of the fixed-width text (strftime's own parse rounds
-- to milliseconds: 59.9999 s would count in the next minute). Index
-- delivery_attempts_age finds the range.
SELECT CAST(strftime('%s', substr(attempted_at, 1, 19)) AS INTEGER) / :bucket * :bucket
           AS bucket,
       outcome, succeeded, count(*) AS count
  FROM delivery_attempts
 WHERE attempted_at >= :since
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3;

-- name: next_attempt_at
SELECT min(next_attempt_at) FROM deliveries
 WHERE subscription_id = ? AND status IN ('pending', 'failed');

-- name: prune_attempts
DELETE FROM delivery_attempts
 WHERE id IN (SELECT id FROM delivery_attempts WHERE attempted_at < ?1
               ORDER BY attempted_at LIMIT ?2);

-- name: prune_attempts.verifications
-- Verifications of pairs that are no subscription (any more): those of live
-- subscriptions stay, whatever their age.
DELETE FROM websub_verifications
 WHERE rowid IN (
     SELECT v.rowid FROM websub_verifications AS v
      WHERE v.verified_at < ?1
        AND NOT EXISTS (SELECT 1 FROM subscriptions AS s
                         WHERE s.kind = 'websub' AND s.url = v.callback
                           AND s.topic_url = v.topic_url)
      ORDER BY v.verified_at LIMIT ?2);

-- name: record_verification
-- The pair's last verification: an older one finishing late does not replace it.
INSERT INTO websub_verifications (callback, topic_url, mode, verified_at, result, detail)
VALUES (:callback, :topic_url, :mode, :verified_at, :result, :detail)
ON CONFLICT (callback, topic_url) DO UPDATE
   SET mode = excluded.mode, verified_at = excluded.verified_at,
       result = excluded.result, detail = excluded.detail
 WHERE excluded.verified_at >= websub_verifications.verified_at;

-- name: get_verification
SELECT * FROM websub_verifications WHERE callback = ? AND topic_url = ?;

-- ---- the portal (issue 22) ----

-- name: create_portal_session
INSERT INTO portal_sessions (session_hash, token_id, created_at, expires_at)
VALUES (?, ?, ?, ?);

-- name: get_portal_session
-- Its token's columns, and the session's own times under other names.
SELECT t.*, s.created_at AS session_created_at, s.expires_at AS session_expires_at
  FROM portal_sessions AS s JOIN tokens AS t ON t.id = s.token_id
 WHERE s.session_hash = ? AND s.expires_at > ? AND t.revoked_at IS NULL;

-- name: delete_portal_session
DELETE FROM portal_sessions WHERE session_hash = ?;

-- name: delete_portal_sessions
DELETE FROM portal_sessions WHERE token_id = ?;

-- name: create_portal_link
INSERT INTO portal_links (link_hash, token_id, created_at, expires_at) VALUES (?, ?, ?, ?);

-- name: use_portal_link
-- Spent in one statement: of two uses, the second finds used_at set. (SQLite's
-- RETURNING cannot name another table: the token is read next, in the same
-- transaction.)
UPDATE portal_links SET used_at = :now
 WHERE link_hash = :link_hash AND used_at IS NULL AND expires_at > :now
   AND EXISTS (SELECT 1 FROM tokens
                WHERE tokens.id = portal_links.token_id AND tokens.revoked_at IS NULL)
RETURNING token_id;

-- name: use_portal_link.token
SELECT * FROM tokens WHERE id = ?;

-- name: prune_portal
DELETE FROM portal_sessions
 WHERE rowid IN (SELECT rowid FROM portal_sessions WHERE expires_at <= ?1
                  ORDER BY expires_at LIMIT ?2);

-- name: prune_portal.links
-- Links are few and live at most 7 days: read whole, not through an index.
DELETE FROM portal_links
 WHERE rowid IN (SELECT rowid FROM portal_links WHERE expires_at <= ?1 OR used_at IS NOT NULL
                  LIMIT ?2);
