-- Each event's webhook body, rendered once when the event is written (the same bytes
-- every push, pull and stream item carries): a partner catching up on events this
-- process never rendered reads them instead of having each rebuilt from its snapshot.
-- NULL for events written before, or by a process without a renderer: those are
-- rendered when read, as before. bytea: the bytes as sent, read without decoding.
-- Compressed with lz4 like the snapshot, where the server can (see 0004).
ALTER TABLE events ADD COLUMN body bytea;
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        SET LOCAL lock_timeout = '5s';
        EXECUTE 'ALTER TABLE events ALTER COLUMN body SET COMPRESSION lz4';
        SET LOCAL lock_timeout = 0;
    END IF;
EXCEPTION
    WHEN feature_not_supported THEN
        RAISE NOTICE 'lz4 compression is not available on this server; keeping pglz';
    WHEN lock_not_available THEN
        RAISE NOTICE 'events busy: lz4 compression not set (see docs/operations.md)';
END
$$;
