-- Globally unique event ids: "msg_" + a UUIDv7 as 32 lowercase hex digits, the
-- webhook-id of every delivery of the event (seq restarts at 1 in every database).
-- New events get theirs from the storage layer (storage.records.new_event_id).
-- Events from before this migration get one here: a UUIDv7 whose time is the event's
-- created_at (milliseconds, from the fixed-width format_time text), then 74 random bits.
-- A column added by ALTER TABLE may not be NOT NULL without a constant default in
-- SQLite: the trigger fills in an event written without an id (by a process still
-- running the code from before this migration).
ALTER TABLE events ADD COLUMN id TEXT;

UPDATE events
   SET id = 'msg_'
         || printf('%012x', max(0, min(281474976710655,
                CAST(strftime('%s', created_at) AS INTEGER) * 1000
                + CAST(substr(created_at, 21, 3) AS INTEGER))))
         || '7' || substr(lower(hex(randomblob(2))), 2)
         || substr('89ab', 1 + (random() & 3), 1) || substr(lower(hex(randomblob(8))), 2);

CREATE UNIQUE INDEX events_id ON events (id);

CREATE TRIGGER events_without_id AFTER INSERT ON events WHEN NEW.id IS NULL
BEGIN
    UPDATE events
       SET id = 'msg_'
             || printf('%012x', max(0, min(281474976710655,
                    CAST(strftime('%s', NEW.created_at) AS INTEGER) * 1000
                    + CAST(substr(NEW.created_at, 21, 3) AS INTEGER))))
             || '7' || substr(lower(hex(randomblob(2))), 2)
             || substr('89ab', 1 + (random() & 3), 1) || substr(lower(hex(randomblob(8))), 2)
     WHERE seq = NEW.seq;
END;
