"""What a request to the change log asks for: the position to read after (an opaque
cursor, or an event id as sent in ``webhook-id``) and the filters, or the problem
that says why not. Shared by ``GET /api/events`` and ``GET /api/events/stream``."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from aiohttp import web

from storage.records import Event, format_time
from syndicate.content.validation import invalid
from syndicate.core.errors import Problem
from syndicate.core.names import EVENT_TYPES, EVERY_TOPIC, valid_topic
from syndicate.web.appkeys import STORAGE
from syndicate.web.changelog import CHANGE_LOG, ChangeLog, EventFilter

CURSOR_PREFIX = "cur_"
_CURSOR = re.compile(r"cur_([0-9a-f]{1,15})")
_EVENT_ID = re.compile(r"msg_[0-9a-f]{32}")
#: How far before a pruned event's id time a resync starts (the id is made a moment
#: after the article's ``updated_at``).
RESYNC_MARGIN = timedelta(seconds=1)


def _values(request: web.Request, name: str) -> list[str] | None:
    """A list parameter, comma-separated and/or repeated; None when absent."""
    raw = request.query.getall(name, [])
    if not raw:
        return None
    values = [v.strip() for part in raw for v in part.split(",")]
    if not all(values):
        raise invalid(name, "holds an empty name (a stray comma?); leave it out instead")
    return values


async def parse_filter(request: web.Request) -> EventFilter:
    """``topics=`` and ``types=``: 422 naming the field for an unknown topic or type.
    ``topics=*`` (or none given): every topic."""
    topics = _values(request, "topics")
    types = _values(request, "types")
    topic_set: frozenset[str] | None = None
    if topics is not None and EVERY_TOPIC not in topics:
        bad = [t for t in topics if not valid_topic(t)]
        if bad:
            raise invalid("topics", f"not a topic slug: {bad[0][:80]!r}")
        known = {t.slug for t in await request.app[STORAGE].list_topics()}
        unknown = sorted(set(topics) - known)
        if unknown:
            raise invalid("topics", f"no such topic: {', '.join(unknown)[:160]}")
        topic_set = frozenset(topics)
    type_set: frozenset[str] | None = None
    if types is not None:
        unknown = sorted(set(types) - set(EVENT_TYPES))
        if unknown:
            raise invalid(
                "types",
                f"unknown event type {unknown[0][:80]!r} (one of {', '.join(EVENT_TYPES)})",
            )
        type_set = frozenset(types)
    return EventFilter(topic_set, type_set)


def cursor_for(seq: int) -> str:
    """The opaque cursor of a position in the log."""
    return f"{CURSOR_PREFIX}{seq:x}"


def _gone(field: str, what: str, since: str, resume: str) -> Problem:
    return Problem(
        410,
        f"{field}: {what} is older than the change log keeps; resync from "
        f"GET /api/articles?updated_since={since} (every article changed since then, "
        f"deleted ones included), then follow GET /api/events?after={resume}",
        errors=[{"field": field, "message": "older than the retained change log"}],
    )


def _id_time(event_id: str) -> datetime | None:
    """When a UUIDv7 event id says it was made; None when that is no time at all
    (an id not made here: its first 48 bits can be past year 9999)."""
    millis = int(uuid.UUID(event_id.removeprefix("msg_")).hex[:12], 16)
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


async def _oldest_kept(log: ChangeLog, horizon: int) -> Event | None:
    kept = await log.storage.list_events(after=horizon, limit=1, with_data=False)
    return kept[0] if kept else None


async def resolve_after(request: web.Request, raw: str | None, *, field: str = "after") -> int:
    """The seq to read after. Absent or empty: the oldest retained event (the
    horizon). A cursor this service issued, or an event id (``msg_...``, as in
    ``webhook-id``). Malformed or unknown cursor: 400 naming ``field``; an event
    id not stored: 404 (410 when it is older than the oldest event kept); a
    position already pruned: 410 whose detail says how to resync."""
    log = request.app[CHANGE_LOG]
    storage = log.storage
    horizon = await storage.event_horizon()
    if raw is None or raw == "":
        return horizon
    raw = raw.strip()
    if raw.startswith("msg_"):
        if not _EVENT_ID.fullmatch(raw):
            raise Problem(
                400,
                f"{field}: {raw[:80]!r} is not an event id (msg_ and 32 hex digits)",
                errors=[{"field": field, "message": "not an event id"}],
            )
        event = await storage.find_event(raw)
        if event is not None:
            return event.seq
        oldest = await _oldest_kept(log, horizon) if horizon else None
        made = _id_time(raw)
        oldest_made = None if oldest is None else _id_time(oldest.id)
        # An id of the oldest kept event's millisecond is older too: events of one
        # write share their millisecond, and a prune may part them.
        if horizon and made is not None and (oldest_made is None or made <= oldest_made):
            # The id says when it was made: its changes, and all since, are to resync.
            since = format_time((made - RESYNC_MARGIN).replace(microsecond=0))
            raise _gone(field, f"event {raw}", since, cursor_for(await log.head()))
        raise Problem(
            404,
            f"{field}: no event {raw} in this change log (an id from another deployment?)",
            errors=[{"field": field, "message": "no such event"}],
        )
    match = _CURSOR.fullmatch(raw)
    if match is None:
        raise Problem(
            400,
            f"{field}: {raw[:80]!r} is neither a cursor this service issued nor an event id",
            errors=[{"field": field, "message": "malformed cursor"}],
        )
    seq = int(match.group(1), 16)
    # Past the head this process knows, it may be another process's (or a wake-up
    # not yet here): only the database's own head can refuse it.
    if seq > await log.head() and seq > await log.head(fresh=True):
        raise Problem(
            400,
            f"{field}: {raw[:80]!r} is not a cursor this service issued (it is past the end "
            "of the change log)",
            errors=[{"field": field, "message": "unknown cursor"}],
        )
    if seq < horizon:
        since = "<the timestamp of the last event you read>"
        raise _gone(field, "the cursor", since, cursor_for(await log.head()))
    return seq
