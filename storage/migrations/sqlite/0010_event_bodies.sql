-- Each event's webhook body, rendered once when the event is written (the same bytes
-- every push, pull and stream item carries): a partner catching up on events this
-- process never rendered reads them instead of having each rebuilt from its snapshot.
-- NULL for events written before, or by a process without a renderer: those are
-- rendered when read, as before. UTF-8 JSON text (not a BLOB: rows of the table are
-- folded into JSON by _bulk.fetch_all).
ALTER TABLE events ADD COLUMN body TEXT;
