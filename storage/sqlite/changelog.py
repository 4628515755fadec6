"""The change log read as an API on sqlite: events by id, the pruning horizon and
pruning, wake-ups on new events, and articles changed since a time.

Pruning never deletes the newest event: the head of the log (``feed_state(None)``,
max(seq)) must never go back, or a reader's cursor would be ahead of it and new
events below it. (SQLite's AUTOINCREMENT would not reuse a seq anyway, but the head
is read from the table.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime

from .._event_watch import EventWatch
from ..base import EventItem, ListCursor
from ..records import Article, Event, format_time
from ._base import Q, SQLiteBase, on_thread, wrap_exceptions
from ._event_watch import poll
from ._rows import event_items, to_article, to_event

#: Above every seq: a bound that does not bind.
_NO_BOUND = 2**62


class ChangeLogMixin(SQLiteBase):
    #: The watchers of ``watch_events``; made by the first one.
    _event_watch: EventWatch | None = None

    async def find_event(self, event_id: str) -> Event | None:
        async with self._read(Q["find_event"], (event_id,)) as rows:
            return to_event(rows[0]) if rows else None

    async def list_event_items(self, *, after: int = 0, limit: int = 100) -> list[EventItem]:
        with wrap_exceptions():
            return await on_thread(self._reader, event_items, Q["list_event_items"], (after, limit))

    async def event_horizon(self) -> int:
        async with self._read(Q["event_horizon"]) as rows:
            return int(rows[0][0]) if rows else 0

    async def prune_events(
        self, *, before: datetime, limit: int = 10_000, now: datetime | None = None
    ) -> int:
        params = {"limit": limit, "before": format_time(before), "top": _NO_BOUND}

        def prune(conn: sqlite3.Connection) -> int:  # one hop, on the one writer
            (last,) = conn.execute(Q["prune_events.bound"], params).fetchone()
            if last is None:
                return 0
            conn.execute(Q["prune_events.deliveries"], (last,))
            deleted = conn.execute(Q["prune_events"], (last,)).rowcount
            conn.execute(Q["prune_events.horizon"], (last,))
            return int(deleted)

        if limit <= 0:
            return 0
        return await self._in_writer(prune)

    def watch_events(self, callback: Callable[[], None]) -> Callable[[], None]:
        if self._event_watch is None:
            self._event_watch = EventWatch(poll(self._commit_mark))
        return self._event_watch.add(callback)

    def _events_committed(self) -> None:
        if self._event_watch is not None:
            self._event_watch.fire()

    def _commit_mark(self) -> bytes | int | None:
        """A value that changes whenever anyone commits (None: unknown or closed)."""
        if self._closed:
            return None
        if self._wal_watch is not None:
            header = self._wal_watch.header()
            if header is not None:
                return header
        version = self._read_inline(Q["sqlite_data_version"], ())
        return None if version is None else int(version[0][0])

    async def close(self) -> None:
        # Before the connections: the WAL header is read from their shared memory.
        if self._event_watch is not None:
            await self._event_watch.close()
        await super().close()

    async def list_changed_articles(
        self, *, since: datetime, after: ListCursor | None = None, limit: int = 50
    ) -> list[Article]:
        when, last_id = max((since, ""), after) if after is not None else (since, "")
        params = (format_time(when), last_id, limit)
        return [to_article(r) for r in await self._read_rows(Q["list_changed_articles"], params)]
