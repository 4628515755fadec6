-- Article bodies and event snapshots (2-3 KB each, so TOAST-compressed) with lz4
-- instead of pglz: compressing them was a large part of every article write, and
-- writes hold the write lock. Values already stored keep their compression until
-- rewritten. A server built without lz4, or older than PostgreSQL 14 (no SET
-- COMPRESSION), keeps pglz: the ALTERs are skipped.
DO $$
BEGIN
    ALTER TABLE articles ALTER COLUMN content SET COMPRESSION lz4;
    ALTER TABLE events ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value OR syntax_error THEN
    RAISE NOTICE 'lz4 compression is not available here; keeping pglz';
END
$$;
