-- Article bodies and event snapshots (2-3 KB each, so TOAST-compressed) with lz4
-- instead of pglz: compressing them was a large part of every article write, and
-- writes hold the write lock. Values already stored keep their compression until
-- rewritten. Only an optimisation, so it is skipped (with a notice) where it cannot
-- be done: PostgreSQL older than 14 (no SET COMPRESSION), a server built without
-- lz4, or when the tables' lock is not had within 5 s (a long pg_dump, say; see
-- docs/operations.md for doing it by hand later). The statements run through
-- EXECUTE so that an older server never has to parse them.
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        SET LOCAL lock_timeout = '5s';
        EXECUTE 'ALTER TABLE articles ALTER COLUMN content SET COMPRESSION lz4';
        EXECUTE 'ALTER TABLE events ALTER COLUMN data SET COMPRESSION lz4';
        SET LOCAL lock_timeout = 0;
    END IF;
EXCEPTION
    WHEN feature_not_supported THEN
        RAISE NOTICE 'lz4 compression is not available on this server; keeping pglz';
    WHEN lock_not_available THEN
        RAISE NOTICE 'articles/events busy: lz4 compression not set (see docs/operations.md)';
END
$$;
