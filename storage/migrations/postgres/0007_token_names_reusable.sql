-- A token's name is unique among live tokens only: once a token is revoked, its name
-- can be given to a new one (the revoked row stays, for the record).
ALTER TABLE tokens DROP CONSTRAINT tokens_name_key;
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;
