-- Globally unique event ids: "msg_" + a UUIDv7 as 32 lowercase hex digits, the
-- webhook-id of every delivery of the event (seq restarts at 1 in every database).
-- New events get theirs from the storage layer (storage.records.new_event_id).
-- syndicate_event_id(at) makes one in SQL, with the time of ``at`` (milliseconds)
-- and 74 random bits of gen_random_uuid(): events from before this migration get one
-- with their created_at, and it is the column's default, so that a process still
-- running the code from before this migration (a rolling upgrade) keeps writing.
CREATE FUNCTION syndicate_event_id(at timestamptz) RETURNS text
    LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    SELECT 'msg_'
           || lpad(to_hex(least(greatest(floor(extract(epoch FROM at) * 1000), 0),
                                281474976710655)::bigint), 12, '0')
           || '7' || substr(r, 14, 3) || substr(r, 17, 16)
      FROM (SELECT replace(gen_random_uuid()::text, '-', '') AS r) AS u
$$;

ALTER TABLE events ADD COLUMN id text COLLATE "C";
UPDATE events SET id = syndicate_event_id(created_at);
ALTER TABLE events ALTER COLUMN id SET NOT NULL,
                   ALTER COLUMN id SET DEFAULT syndicate_event_id(clock_timestamp());
CREATE UNIQUE INDEX events_id ON events (id);
