-- The portal (issue 22): signed-in sessions and single-use sign-in links, each kept
-- by the hash of its secret only (a copy of the database signs no one in). Both end
-- with their token: revoke_token deletes them in its transaction (a revoked token's
-- row stays, so the cascade is for a token row ever deleted by hand).
CREATE TABLE portal_sessions (
    session_hash text COLLATE "C" PRIMARY KEY,
    token_id     bigint NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
-- revoke_token and sign-out everywhere (delete_portal_sessions); the cascade's look-up.
CREATE INDEX portal_sessions_token ON portal_sessions (token_id);
-- prune_portal: the expired ones, without reading the rest.
CREATE INDEX portal_sessions_expiry ON portal_sessions (expires_at);

-- A link is spent by setting used_at (use_portal_link, one UPDATE whose row lock
-- makes a concurrent second use see it used): kept until it expires or prune_portal
-- takes it, so a second use finds it used, not unknown.
CREATE TABLE portal_links (
    link_hash  text COLLATE "C" PRIMARY KEY,
    token_id   bigint NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX portal_links_token ON portal_links (token_id);

-- The attempt pages show what the endpoint answered and when the request was signed
-- (its webhook-timestamp), beside when the outcome was recorded (attempted_at).
-- NULL for attempts recorded before, and sent_at for a delivery given up unsent.
-- Nullable without a default: no rewrite of the table.
ALTER TABLE delivery_attempts ADD COLUMN response_body text, ADD COLUMN sent_at timestamptz;

-- The operator dashboard's failing subscriptions, longest failing first: the few
-- failing rows only (failing_since is NULL on every healthy one).
CREATE INDEX subscriptions_failing ON subscriptions (failing_since)
    WHERE failing_since IS NOT NULL;
