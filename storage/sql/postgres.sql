-- Named queries for the PostgreSQL backend; see storage/_sql.py for the format.
-- Placeholders are asyncpg's $1, $2, ...; jsonb values are Python objects
-- (a codec on every connection encodes and decodes them).

-- name: pg_advisory_xact_lock
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

-- name: articles_and_slug_owners
-- The articles with ids $1 (wanted) and those holding the slugs $2.
SELECT *, id = ANY($1::text[]) AS wanted FROM articles
 WHERE id = ANY($1::text[]) OR slug = ANY($2::text[]);

-- name: slugs_in_ranges
-- For each base, the base and all its base-N forms (and a few more, which only make
-- the answer larger): [base, base.), as "." sorts right after "-". One index range
-- scan per base (LATERAL), all in one round trip; a single WHERE with every range
-- ORed would be planned as a full scan, the planner not seeing how narrow they are.
SELECT a.slug, a.id
FROM unnest($1::text[], $2::text[]) AS r(low, high)
CROSS JOIN LATERAL (SELECT slug, id FROM articles WHERE slug >= r.low AND slug < r.high) AS a;
-- name: save_article
-- One article state, when the same id is written twice in one group.
INSERT INTO articles (id, guid, slug, title, summary, content, content_type, topics, author,
                      url, image, language, published_at, updated_at, created_at, version,
                      deleted_at, scheduled)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (id) DO UPDATE
   SET slug = excluded.slug, title = excluded.title, summary = excluded.summary,
       content = excluded.content, content_type = excluded.content_type,
       topics = excluded.topics, author = excluded.author, url = excluded.url,
       image = excluded.image, language = excluded.language,
       published_at = excluded.published_at, updated_at = excluded.updated_at,
       version = excluded.version, deleted_at = excluded.deleted_at,
       scheduled = excluded.scheduled;

-- name: write_articles.unindex_articles
-- Before rewriting articles that have topic rows: drop the rows, uncount them.
WITH gone AS (DELETE FROM article_topics WHERE article_id = ANY($1::text[]) RETURNING topic)
UPDATE topics t SET article_count = t.article_count - d.n
  FROM (SELECT topic, count(*) AS n FROM gone GROUP BY topic) AS d
 WHERE t.slug = d.topic;

-- name: write_articles
-- A whole group of article writes in one statement (under the write lock):
-- $1-$18   the final state of each article, one array per column;
-- $19-$23  one event per write, in order (identity values are taken in row
--          order, which ORDER BY n fixes, so seq order is the order given);
--          a write whose type ($19) is NULL has no event (a scheduled article's);
--          an event whose snapshot ($22) is NULL is of the n-th article of
--          $1-$18, and its snapshot is built here from that row: the article's
--          body then crosses the wire once, and is not parsed as JSON again;
-- $24-$26  the live articles' topic rows;
-- $27-$29  the topics that gain topic rows, their default titles (for a new
--          topic) and how many rows each gains;
-- $31      the other touched topics (left, or only in an earlier write of the
--          same id): they exist already and are only marked. All are marked
--          changed at the last event.
-- $33      the events' ids (records.new_event_id), one per write like $19-$23.
-- $34      the events' webhook bodies (or NULL), one per write like $19-$23.
-- Foreign keys are checked at the end of the statement, so the topic rows may
-- name articles and topics inserted by the same statement.
-- A built snapshot is Article.to_json(): every column, times as format_time text.
WITH given AS (
    SELECT *
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                  $13::timestamptz[], $14::timestamptz[], $15::timestamptz[], $16::int[],
                  $17::timestamptz[], $18::boolean[])
           WITH ORDINALITY
           AS a (id, guid, slug, title, summary, content, content_type, topics, author, url,
                 image, language, published_at, updated_at, created_at, version, deleted_at,
                 scheduled, n)
), saved AS (
    INSERT INTO articles (id, guid, slug, title, summary, content, content_type, topics,
                          author, url, image, language, published_at, updated_at,
                          created_at, version, deleted_at, scheduled)
    SELECT id, guid, slug, title, summary, content, content_type, topics::jsonb, author,
           url, image, language, published_at, updated_at, created_at, version, deleted_at,
           scheduled
      FROM given
    ON CONFLICT (id) DO UPDATE
       SET slug = excluded.slug, title = excluded.title, summary = excluded.summary,
           content = excluded.content, content_type = excluded.content_type,
           topics = excluded.topics, author = excluded.author, url = excluded.url,
           image = excluded.image, language = excluded.language,
           published_at = excluded.published_at, updated_at = excluded.updated_at,
           version = excluded.version, deleted_at = excluded.deleted_at,
           scheduled = excluded.scheduled
), logged AS (
    INSERT INTO events (id, type, article_id, topics, data, created_at, body)
    SELECT e.id, e.type, e.article_id, e.topics::jsonb,
           coalesce(e.data::jsonb, jsonb_build_object(
               'id', a.id, 'guid', a.guid, 'slug', a.slug, 'title', a.title,
               'summary', a.summary, 'content', a.content, 'content_type', a.content_type,
               'topics', a.topics::jsonb, 'author', a.author, 'url', a.url,
               'image', a.image, 'language', a.language,
               'published_at', to_char(a.published_at AT TIME ZONE 'UTC', $32),
               'updated_at', to_char(a.updated_at AT TIME ZONE 'UTC', $32),
               'created_at', to_char(a.created_at AT TIME ZONE 'UTC', $32),
               'version', a.version,
               'deleted_at', to_char(a.deleted_at AT TIME ZONE 'UTC', $32))),
           e.created_at, e.body
      FROM unnest($33::text[], $19::text[], $20::text[], $21::text[], $22::text[],
                  $23::timestamptz[], $34::bytea[])
           WITH ORDINALITY AS e (id, type, article_id, topics, data, created_at, body, n)
      LEFT JOIN given AS a ON e.data IS NULL AND a.n = e.n
     WHERE e.type IS NOT NULL
     ORDER BY e.n
    RETURNING seq
), linked AS (
    INSERT INTO article_topics (topic, article_id, published_at)
    SELECT * FROM unnest($24::text[], $25::text[], $26::timestamptz[])
), counted AS (
    INSERT INTO topics (slug, title, description, created_at, updated_at, article_count,
                        changed_seq, changed_at)
    SELECT slug, title, '', $30, $30, n, (SELECT max(seq) FROM logged), $30
      FROM unnest($27::text[], $28::text[], $29::bigint[]) AS t (slug, title, n)
    ON CONFLICT (slug) DO UPDATE
       SET article_count = topics.article_count + excluded.article_count,
           changed_seq = excluded.changed_seq, changed_at = excluded.changed_at
)
UPDATE topics SET changed_seq = (SELECT max(seq) FROM logged), changed_at = $30
 WHERE slug = ANY($31::text[]);

-- name: list_articles
SELECT * FROM articles
 WHERE deleted_at IS NULL AND NOT scheduled AND (published_at, id) < ($1, $2)
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

-- name: list_event_heads
SELECT seq, id, type, article_id, topics, '{}'::jsonb AS data, created_at
FROM events WHERE seq > $1 ORDER BY seq LIMIT $2;

-- name: list_event_items
SELECT seq, id, type, topics::text, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2;

-- name: insert_token
INSERT INTO tokens (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4)
RETURNING *;

-- name: insert_token.last_of_name
SELECT role, revoked_at FROM tokens WHERE name = $1 ORDER BY id DESC LIMIT 1;

-- name: get_token_by_hash
SELECT * FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL;

-- name: touch_token
UPDATE tokens SET last_used_at = $1 WHERE id = $2;

-- name: count_tokens
SELECT count(*) FROM tokens WHERE revoked_at IS NULL;

-- name: list_tokens
SELECT * FROM tokens ORDER BY id;

-- name: revoke_token
-- The token's portal sessions and unused links go in the same statement (a used link
-- is no key to anything and goes with prune_portal).
WITH revoked AS (
    UPDATE tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL RETURNING *
),
sessions AS (
    DELETE FROM portal_sessions WHERE token_id IN (SELECT id FROM revoked)
),
links AS (
    DELETE FROM portal_links WHERE token_id IN (SELECT id FROM revoked) AND used_at IS NULL
)
SELECT * FROM revoked;

-- name: get_live_token
SELECT * FROM tokens WHERE name = $1 AND revoked_at IS NULL;

-- name: revoke_token.last_revoked
SELECT * FROM tokens WHERE name = $1 AND revoked_at IS NOT NULL
 ORDER BY revoked_at DESC, id DESC LIMIT 1;

-- name: pg_notify_token_revoked
SELECT pg_notify('syndicate_tokens', '');

-- name: insert_subscription
INSERT INTO subscriptions (id, kind, owner, url, topics, events, secret, status, description,
                           lease_expires_at, topic_url, created_at, updated_at, owner_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13)
RETURNING *;

-- name: subscriptions_without_owner_key
SELECT id, kind, owner, url FROM subscriptions WHERE owner_key IS NULL;

-- name: set_owner_key
UPDATE subscriptions SET owner_key = $1 WHERE id = $2;

-- name: set_host_owner_key
-- After a URL change: only subscriptions shared out by host follow it.
UPDATE subscriptions SET owner_key = $1 WHERE id = $2 AND (kind = 'websub' OR owner IS NULL)
RETURNING *;

-- name: count_websub_subscriptions
-- With "$1 IS NULL OR" filters a generic plan (asyncpg prepares statements) scans:
-- one statement per filter, each an index search.
SELECT count(*) FROM subscriptions WHERE kind = 'websub';

-- name: count_websub_subscriptions_of_owner
SELECT count(*) FROM subscriptions
 WHERE owner_key = $1 AND kind = 'websub' AND ($2::text IS NULL OR topic_url = $2);

-- name: count_websub_subscriptions_of_topic
SELECT count(*) FROM subscriptions WHERE kind = 'websub' AND topic_url = $1;

-- name: get_subscription
SELECT * FROM subscriptions WHERE id = $1;

-- name: find_websub_subscription
SELECT * FROM subscriptions WHERE kind = 'websub' AND url = $1 AND topic_url = $2;

-- name: insert_deliveries
-- NOT EXISTS spares the identity sequence on re-runs; ON CONFLICT covers races.
WITH created AS (
    INSERT INTO deliveries (event_seq, subscription_id, kind, status, next_attempt_at,
                            created_at)
    SELECT $1, s.sid, (SELECT sub.kind FROM subscriptions AS sub WHERE sub.id = s.sid),
           'pending', $3, $3
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
-- Shared out between owners: of the $9 longest-due deliveries of kind $8 whose owner
-- has room, each owner's are ranked (first attempts ahead of retries, then oldest
-- first), at most its room ($6/$7, default $5) of each, the first of every owner
-- before the second of any.
WITH scanned AS (
    SELECT d.id, d.attempts > 0 AS retry, d.next_attempt_at, s.owner_key,
           coalesce(r.room, $5) AS room
      FROM deliveries AS d
      JOIN subscriptions AS s ON s.id = d.subscription_id
      LEFT JOIN unnest($6::text[], $7::integer[]) AS r (key, room) ON r.key = s.owner_key
     WHERE d.kind = $8
       AND d.status IN ('pending', 'failed')
       AND d.next_attempt_at <= $3
       AND (d.claimed_until IS NULL OR d.claimed_until <= $3)
       AND coalesce(r.room, 1) > 0
     ORDER BY d.next_attempt_at, d.id
     LIMIT $9
),
ranked AS (
    SELECT id, retry, next_attempt_at, room,
           row_number() OVER (PARTITION BY owner_key
                              ORDER BY retry, next_attempt_at, id) AS rank
      FROM scanned
),
picked AS (
    SELECT id, rank, retry, next_attempt_at FROM ranked
     WHERE rank <= room
     ORDER BY rank, retry, next_attempt_at, id
     LIMIT $4
),
-- Every condition again: a row changed since the snapshot (its outcome recorded, or
-- deferred) is re-checked against this WHERE only, once locked.
due AS (
    SELECT d.id FROM deliveries AS d JOIN picked USING (id)
     WHERE d.kind = $8
       AND d.status IN ('pending', 'failed')
       AND d.next_attempt_at <= $3
       AND (d.claimed_until IS NULL OR d.claimed_until <= $3)
       FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries AS d
   SET claimed_until = $1, claimed_by = $2
  FROM due
 WHERE d.id = due.id
RETURNING d.*;

-- name: release_delivery
UPDATE deliveries SET claimed_until = NULL, claimed_by = NULL
 WHERE id = $1 AND claimed_by = $2;

-- name: topic_feed_state
SELECT changed_seq AS seq, changed_at, updated_at FROM topics WHERE slug = $1;

-- name: all_feed_state
SELECT seq, created_at AS changed_at, NULL::timestamptz AS updated_at
  FROM events ORDER BY seq DESC LIMIT 1;

-- name: list_articles_after
SELECT * FROM articles
 WHERE deleted_at IS NULL AND NOT scheduled AND (published_at, id) > ($1, $2)
 ORDER BY published_at, id
 LIMIT $3;

-- name: list_articles_in_topic_after
SELECT a.* FROM article_topics AS t JOIN articles AS a ON a.id = t.article_id
 WHERE t.topic = $1 AND (t.published_at, t.article_id) > ($2, $3)
 ORDER BY t.published_at, t.article_id
 LIMIT $4;

-- name: get_subscriptions
SELECT * FROM subscriptions WHERE id = ANY($1::text[]);

-- name: list_subscriptions
SELECT * FROM subscriptions
 WHERE id > $1 AND ($2::text IS NULL OR kind = $2)
 ORDER BY id
 LIMIT $3;

-- name: list_owner_subscriptions
SELECT * FROM subscriptions
 WHERE owner = $4 AND id > $1 AND ($2::text IS NULL OR kind = $2)
 ORDER BY id
 LIMIT $3;

-- name: list_active_subscriptions
SELECT * FROM subscriptions
 WHERE status = 'active' AND (lease_expires_at IS NULL OR lease_expires_at > $1)
   AND ($2::text IS NULL OR kind = $2)
 ORDER BY id;

-- name: update_subscription
-- A template: the caller fills in one "column = $n, " per changed column, with
-- names taken from SUBSCRIPTION_MUTABLE only, never from its input.
UPDATE subscriptions SET {assignments}updated_at = $2 WHERE id = $1
RETURNING *;

-- name: delete_subscription.lock_deliveries
-- Before a subscription is deleted: its deliveries locked first, in the order that
-- complete_deliveries takes them (deliveries, then their subscription), so the two
-- never deadlock (the cascade would lock the deliveries after the subscription).
SELECT 1 FROM deliveries WHERE subscription_id = $1 ORDER BY id FOR UPDATE;

-- name: delete_subscription
DELETE FROM subscriptions WHERE id = $1 RETURNING id;

-- name: fan_out
-- ($1[i], $2[i]) = (event seq, subscription id). Pairs whose subscription was
-- deleted meanwhile are skipped; NOT EXISTS spares the identity sequence on
-- re-runs, ON CONFLICT covers races.
WITH created AS (
    INSERT INTO deliveries (event_seq, subscription_id, kind, status, next_attempt_at,
                            created_at)
    SELECT p.seq, p.sid, (SELECT s.kind FROM subscriptions AS s WHERE s.id = p.sid),
           'pending', $3, $3
      FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS p (seq, sid, n)
     WHERE EXISTS (SELECT 1 FROM subscriptions AS s WHERE s.id = p.sid)
       AND NOT EXISTS (SELECT 1 FROM deliveries AS d
                        WHERE d.event_seq = p.seq AND d.subscription_id = p.sid)
     GROUP BY p.seq, p.sid
     ORDER BY min(p.n)
    ON CONFLICT (event_seq, subscription_id) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM created;

-- name: fan_out_events
-- One step of a fan-out, set-based: events $2 < seq <= $3 against the next $5
-- subscriptions of kind $1 after id $4 that are active at $6; a pair is made when the
-- subscription is not newer than the event and wants its type and one of its topics
-- (webhooks.matches). NOT EXISTS spares the identity sequence when several
-- processes fan out the same events; ON CONFLICT covers their races. Returns how
-- many were made, the last subscription looked at and how many there were.
WITH subs AS (
    SELECT id, kind, topics, events, created_at
      FROM subscriptions
     WHERE kind = $1 AND status = 'active'
       AND (lease_expires_at IS NULL OR lease_expires_at > $6)
       AND id > $4
     ORDER BY id
     LIMIT $5
),
evs AS (
    SELECT seq, type, created_at, ARRAY(SELECT jsonb_array_elements_text(topics)) AS topics
      FROM events
     WHERE seq > $2 AND seq <= $3
),
created AS (
    INSERT INTO deliveries (event_seq, subscription_id, kind, status, next_attempt_at,
                            created_at)
    SELECT e.seq, s.id, s.kind, 'pending', $6, $6
      FROM evs AS e JOIN subs AS s ON s.created_at <= e.created_at
     WHERE (s.events = '[]'::jsonb OR s.events ? e.type)
       AND (s.topics ? '*' OR s.topics ?| e.topics)
       AND NOT EXISTS (SELECT 1 FROM deliveries AS d
                        WHERE d.event_seq = e.seq AND d.subscription_id = s.id)
     ORDER BY e.seq, s.id
    ON CONFLICT (event_seq, subscription_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM created) AS created,
       (SELECT max(id) FROM subs) AS last_subscription,
       (SELECT count(*) FROM subs) AS looked_at;

-- name: pg_fan_out_memory
SET LOCAL work_mem = '64MB';

-- name: move_cursor
INSERT INTO fanout_cursors (name, seq) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET seq = greatest(fanout_cursors.seq, excluded.seq);

-- name: get_cursor
SELECT seq FROM fanout_cursors WHERE name = $1;

-- name: get_events
SELECT * FROM events WHERE seq = ANY($1::bigint[]) ORDER BY seq;

-- name: get_event_ids
SELECT seq, id FROM events WHERE seq = ANY($1::bigint[]);

-- name: list_deliveries
SELECT * FROM deliveries
 WHERE subscription_id = $1 AND id < $2
 ORDER BY id DESC
 LIMIT $3;

-- name: list_deliveries_with_status
SELECT * FROM deliveries
 WHERE subscription_id = $1 AND id < $2 AND status = $4
 ORDER BY id DESC
 LIMIT $3;

-- name: list_deliveries.filtered
-- The portal's filters; without them list_deliveries(_with_status) reads the index
-- alone. The event's type is the one column read from events.
SELECT d.* FROM deliveries AS d
 WHERE d.subscription_id = $1 AND d.id < $2
   AND ($4::text IS NULL OR d.status = $4)
   AND ($5::timestamptz IS NULL OR d.created_at >= $5)
   AND ($6::timestamptz IS NULL OR d.created_at < $6)
   AND ($7::text IS NULL
        OR EXISTS (SELECT 1 FROM events AS e WHERE e.seq = d.event_seq AND e.type = $7))
 ORDER BY d.id DESC
 LIMIT $3;

-- name: list_failing_subscriptions
-- Index subscriptions_failing.
SELECT * FROM subscriptions
 WHERE failing_since IS NOT NULL
 ORDER BY failing_since, id
 LIMIT $1;

-- name: complete_deliveries
-- The whole batch in one statement: record each attempt (deliveries gone since
-- the claim drop out of the join) on its delivery and in delivery_attempts (the
-- status pages' log), then the failure window of every touched
-- subscription, locked in id order so concurrent batches cannot deadlock (NO KEY
-- UPDATE: fan-out's foreign key checks still pass). Returns the touched
-- subscriptions; the caller disables the ones past the window. Only the claim the
-- attempt was made under (still $11's, with the lease it was claimed with, $12; none
-- given: any of $11's) takes the status, due time, delivered time and the end of the
-- lease: a delivery retried meanwhile, claimed again, or whose lease another worker
-- took over keeps them; the attempt is counted and logged.
WITH o AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::integer[],
                         $5::text[], $6::text[], $7::double precision[], $8::boolean[],
                         $10::timestamptz[], $12::timestamptz[])
               AS o (id, status, next_attempt_at, status_code, error, response_body,
                     latency_ms, succeeded, sent_at, claimed_until)
),
held AS (
    -- Locked first, in id order, and read as locked (a retry committed meanwhile is
    -- seen): does the row still hold the claim this attempt was made under?
    SELECT d.id, d.claimed_by = $11
                 AND d.claimed_until = coalesce(o.claimed_until, d.claimed_until) AS held
      FROM deliveries AS d JOIN o ON o.id = d.id
     ORDER BY d.id
       FOR UPDATE OF d
),
done AS (
    UPDATE deliveries AS d
       SET attempts = d.attempts + 1,
           status = CASE WHEN h.held THEN o.status ELSE d.status END,
           next_attempt_at = CASE WHEN h.held THEN coalesce(o.next_attempt_at, d.next_attempt_at)
                                  ELSE d.next_attempt_at END,
           last_status_code = o.status_code,
           last_error = o.error,
           last_response_body = o.response_body,
           last_latency_ms = o.latency_ms,
           delivered_at = CASE WHEN h.held AND o.status = 'delivered' THEN $9
                               ELSE d.delivered_at END,
           claimed_until = CASE WHEN h.held THEN NULL ELSE d.claimed_until END,
           claimed_by = CASE WHEN h.held THEN NULL ELSE d.claimed_by END
      FROM o JOIN held AS h ON h.id = o.id
     WHERE d.id = o.id
    RETURNING d.id, d.subscription_id, o.status, o.succeeded, o.status_code, o.latency_ms,
              o.error, o.response_body, o.sent_at
),
attempted AS (
    INSERT INTO delivery_attempts (delivery_id, subscription_id, attempted_at, outcome,
                                   succeeded, status_code, latency_ms, error, response_body,
                                   sent_at)
    SELECT id, subscription_id, $9, status, succeeded, status_code, latency_ms, error,
           response_body, sent_at
      FROM done
),
touched AS (
    SELECT subscription_id AS id, bool_or(succeeded) AS succeeded
      FROM done
     GROUP BY subscription_id
),
locked AS (
    SELECT s.id, t.succeeded
      FROM subscriptions AS s JOIN touched AS t ON t.id = s.id
     ORDER BY s.id
       FOR NO KEY UPDATE OF s
)
UPDATE subscriptions AS s
   SET last_success_at = CASE WHEN l.succeeded THEN $9 ELSE s.last_success_at END,
       failing_since = CASE WHEN l.succeeded THEN NULL ELSE coalesce(s.failing_since, $9) END
  FROM locked AS l
 WHERE s.id = l.id
RETURNING s.id, s.kind, s.status, s.failing_since;

-- name: disable_failing_subscriptions
UPDATE subscriptions SET status = 'disabled', updated_at = $2
 WHERE id = ANY($1::text[])
   AND kind = 'webhook' AND status = 'active' AND failing_since <= $3
RETURNING id;

-- name: retry_delivery
UPDATE deliveries
   SET status = 'pending', next_attempt_at = $2, claimed_until = NULL, claimed_by = NULL
 WHERE id = $1
RETURNING *;

-- name: recover_deliveries
WITH recovered AS (
    UPDATE deliveries
       SET status = 'pending', next_attempt_at = $3, claimed_until = NULL, claimed_by = NULL
     WHERE subscription_id = $1 AND status IN ('failed', 'dead') AND created_at >= $2
    RETURNING 1
)
SELECT count(*) FROM recovered;

-- name: delivery_stats
SELECT count(*) AS pending,
       count(*) FILTER (WHERE next_attempt_at <= $1) AS due,
       min(created_at) AS oldest_pending_at
  FROM deliveries
 WHERE status IN ('pending', 'failed');

-- name: defer_deliveries
-- Back to the queue, due later, no attempt counted; only while still ours.
UPDATE deliveries SET next_attempt_at = $3, claimed_until = NULL, claimed_by = NULL
 WHERE id = ANY($1::bigint[]) AND claimed_by = $2;

-- name: register_worker
-- Heartbeats are the database's time (unless one is given): processes on machines
-- whose clocks disagree are still judged by one clock.
INSERT INTO workers (id, hostname, pid, kind, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4, coalesce($5, now()), coalesce($5, now()))
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at;

-- name: heartbeat_worker
UPDATE workers SET heartbeat_at = coalesce($1, now()) WHERE id = $2 RETURNING id;

-- name: unregister_worker
DELETE FROM workers WHERE id = $1;

-- name: release_workers
-- The workers silent for $1 (by the database's clock, or before $4 less $1 when given)
-- or named dead in $2, never $3: their claims released and their rows deleted; returns
-- one row per released worker with how many it held.
WITH gone AS (
    DELETE FROM workers
     WHERE (heartbeat_at < coalesce($4, now()) - $1::interval OR id = ANY($2::text[]))
       AND id <> $3
    RETURNING id
),
released AS (
    UPDATE deliveries AS d SET claimed_until = NULL, claimed_by = NULL
      FROM gone
     WHERE d.claimed_by = gone.id
    RETURNING gone.id
)
SELECT gone.id, (SELECT count(*) FROM released WHERE released.id = gone.id) AS released
  FROM gone;

-- name: list_workers
SELECT w.*, (SELECT count(*) FROM deliveries AS d
              WHERE d.claimed_by = w.id AND d.claimed_until > $1) AS held
  FROM workers AS w
 ORDER BY w.started_at, w.id;

-- name: list_deleted
-- Announced tombstones (a scheduled article's deletion was never announced).
SELECT * FROM articles
 WHERE deleted_at IS NOT NULL AND deleted_at >= $1 AND NOT scheduled
 ORDER BY deleted_at DESC, id DESC
 LIMIT $2;

-- name: list_deleted_in_topic
SELECT * FROM articles
 WHERE deleted_at IS NOT NULL AND deleted_at >= $2 AND NOT scheduled
   AND topics @> jsonb_build_array($1::text)
 ORDER BY deleted_at DESC, id DESC
 LIMIT $3;

-- name: due_articles
SELECT * FROM articles
 WHERE scheduled AND deleted_at IS NULL AND published_at <= $1
 ORDER BY published_at, id
 LIMIT $2;

-- name: next_scheduled
SELECT min(published_at) FROM articles WHERE scheduled AND deleted_at IS NULL;

-- name: get_site_setting
SELECT value FROM site WHERE key = $1;

-- name: claim_site_setting
INSERT INTO site (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING;

-- name: set_site_setting
INSERT INTO site (key, value, updated_at) VALUES ($1, $2, $3)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at;

-- name: list_scheduled
-- Scheduled (not deleted) articles newest first, for the operator: $1 a topic or NULL.
SELECT * FROM articles
 WHERE scheduled AND deleted_at IS NULL AND (published_at, id) < ($2, $3)
   AND ($1::text IS NULL OR topics @> jsonb_build_array($1::text))
 ORDER BY published_at DESC, id DESC
 LIMIT $4;

-- name: search_articles
-- Live and scheduled articles whose title contains $1 (escaped with '\' by the
-- caller; ILIKE ignores case). No index can serve a "contains" (a trigram index
-- could, with pg_trgm): the table is read.
SELECT * FROM articles
 WHERE deleted_at IS NULL AND title ILIKE '%' || $1 || '%' ESCAPE '\'
   AND ($2::text IS NULL OR topics @> jsonb_build_array($2::text))
 ORDER BY published_at DESC, id DESC
 LIMIT $3;

-- ---- change log (issue 21) ----

-- name: find_event
SELECT seq, id, type, article_id, topics, '{}'::jsonb AS data, created_at
  FROM events WHERE id = $1;

-- name: event_horizon
SELECT seq FROM event_horizon;

-- name: list_changed_articles
-- Changed strictly after ($1, $2) = (updated_at, id), oldest change first; tombstones
-- included (a deletion sets updated_at), scheduled articles never (index articles_changed).
SELECT * FROM articles
 WHERE NOT scheduled AND (updated_at, id) > ($1, $2)
 ORDER BY updated_at, id
 LIMIT $3;

-- name: prune_events.bound
-- The last seq that prune_events may delete (NULL: none, or the log is empty): the
-- lowest of
--   the seq before the first of the $2 oldest events created at or after $1 (else
--   the last of those $2),
--   the seq before the first event with a delivery not yet ended,
--   the lowest fan-out cursor (every event up to it is fanned out; no cursor: no
--   fan-out has run, and none is waiting),
--   the seq before the last event (the newest stays: it is the head, feed_state).
-- Each term is one index probe, or a walk of at most $2 rows of the primary key.
-- least() skips NULLs: the CASE keeps an empty log's answer NULL.
WITH head AS (SELECT seq, created_at FROM events ORDER BY seq LIMIT $2)
SELECT CASE WHEN (SELECT max(seq) FROM head) IS NOT NULL THEN
       least(coalesce((SELECT min(seq) FROM head WHERE created_at >= $1) - 1,
                      (SELECT max(seq) FROM head)),
             (SELECT min(event_seq) FROM deliveries
               WHERE status IN ('pending', 'failed')) - 1,
             (SELECT min(seq) FROM fanout_cursors),
             (SELECT max(seq) FROM events) - 1)
       END;

-- name: prune_events.deliveries
DELETE FROM deliveries WHERE event_seq <= $1;

-- name: prune_events
DELETE FROM events WHERE seq <= $1;

-- name: prune_events.horizon
UPDATE event_horizon SET seq = greatest(seq, $1);

-- ---- attempts and verifications (issue 21) ----

-- name: list_attempts
-- Newest first, with the event id and type of each (NULL once its delivery was pruned).
SELECT a.id, a.delivery_id, a.subscription_id, a.attempted_at, a.outcome, a.succeeded,
       a.status_code, a.latency_ms, a.error, a.response_body, a.sent_at,
       e.id AS event_id, e.type AS event_type
  FROM delivery_attempts AS a
  LEFT JOIN deliveries AS d ON d.id = a.delivery_id
  LEFT JOIN events AS e ON e.seq = d.event_seq
 WHERE a.subscription_id = $1 AND a.attempted_at >= $2
 ORDER BY a.attempted_at DESC, a.id DESC
 LIMIT $3;

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
 WHERE a.subscription_id = $1
   AND a.attempted_at >= greatest($2, (SELECT created_at - interval '1 hour'
                                         FROM deliveries WHERE id = $4))
   AND a.delivery_id = $4
 ORDER BY a.attempted_at DESC, a.id DESC
 LIMIT $3;

-- name: get_attempt
SELECT a.id, a.delivery_id, a.subscription_id, a.attempted_at, a.outcome, a.succeeded,
       a.status_code, a.latency_ms, a.error, a.response_body, a.sent_at,
       e.id AS event_id, e.type AS event_type
  FROM delivery_attempts AS a
  LEFT JOIN deliveries AS d ON d.id = a.delivery_id
  LEFT JOIN events AS e ON e.seq = d.event_seq
 WHERE a.id = $1;

-- name: count_attempts
-- Index delivery_attempts_age (BRIN) finds the range.
SELECT to_timestamp((floor(extract(epoch FROM attempted_at) / $2::bigint) * $2::bigint)
                    ::double precision) AS bucket,
       outcome, succeeded, count(*) AS count
  FROM delivery_attempts
 WHERE attempted_at >= $1
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3;

-- name: next_attempt_at
SELECT min(next_attempt_at) FROM deliveries
 WHERE subscription_id = $1 AND status IN ('pending', 'failed');

-- name: prune_attempts
WITH gone AS (
    DELETE FROM delivery_attempts
     WHERE id IN (SELECT id FROM delivery_attempts WHERE attempted_at < $1 LIMIT $2)
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: prune_attempts.verifications
-- Verifications of pairs that are no subscription (any more): those of live
-- subscriptions stay, whatever their age.
DELETE FROM websub_verifications AS v
 WHERE v.verified_at < $1
   AND (v.callback, v.topic_url) IN (
       SELECT w.callback, w.topic_url FROM websub_verifications AS w
        WHERE w.verified_at < $1
          AND NOT EXISTS (SELECT 1 FROM subscriptions AS s
                           WHERE s.kind = 'websub' AND s.url = w.callback
                             AND s.topic_url = w.topic_url)
        LIMIT $2);

-- name: record_verification
-- The pair's last verification: an older one finishing late does not replace it.
INSERT INTO websub_verifications (callback, topic_url, mode, verified_at, result, detail)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (callback, topic_url) DO UPDATE
   SET mode = excluded.mode, verified_at = excluded.verified_at,
       result = excluded.result, detail = excluded.detail
 WHERE excluded.verified_at >= websub_verifications.verified_at;

-- name: get_verification
SELECT * FROM websub_verifications WHERE callback = $1 AND topic_url = $2;

-- ---- the portal (issue 22) ----

-- name: create_portal_session
INSERT INTO portal_sessions (session_hash, token_id, created_at, expires_at)
VALUES ($1, $2, $3, $4);

-- name: get_portal_session
-- Its token's columns, and the session's own times under other names.
SELECT t.*, s.created_at AS session_created_at, s.expires_at AS session_expires_at
  FROM portal_sessions AS s JOIN tokens AS t ON t.id = s.token_id
 WHERE s.session_hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL;

-- name: delete_portal_session
DELETE FROM portal_sessions WHERE session_hash = $1;

-- name: delete_portal_sessions
WITH gone AS (DELETE FROM portal_sessions WHERE token_id = $1 RETURNING 1)
SELECT count(*) FROM gone;

-- name: create_portal_link
INSERT INTO portal_links (link_hash, token_id, created_at, expires_at) VALUES ($1, $2, $3, $4);

-- name: use_portal_link
-- Spent in one statement: of two concurrent uses, the second waits for the first's
-- row lock, then finds used_at set (READ COMMITTED re-checks the WHERE on the new
-- row version) and returns nothing.
UPDATE portal_links AS l SET used_at = $2
  FROM tokens AS t
 WHERE l.link_hash = $1 AND l.used_at IS NULL AND l.expires_at > $2
   AND t.id = l.token_id AND t.revoked_at IS NULL
RETURNING t.*;

-- name: prune_portal
-- Expired sessions, then expired or used links (links are few, live at most 7 days:
-- read whole, not through an index), $2 rows at most in all.
WITH sessions AS (
    DELETE FROM portal_sessions
     WHERE session_hash IN (SELECT session_hash FROM portal_sessions WHERE expires_at <= $1
                             ORDER BY expires_at LIMIT $2)
    RETURNING 1
),
links AS (
    DELETE FROM portal_links
     WHERE link_hash IN (SELECT link_hash FROM portal_links
                          WHERE expires_at <= $1 OR used_at IS NOT NULL
                          LIMIT greatest($2 - (SELECT count(*) FROM sessions), 0))
    RETURNING 1
)
SELECT (SELECT count(*) FROM sessions) + (SELECT count(*) FROM links);
