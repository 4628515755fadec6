"""The change log read as an API on postgres: events by id, the pruning horizon and
pruning, wake-ups on new events, and articles changed since a time.

Pruning runs under the article write lock (``_write_transaction``): no event is being
written meanwhile, so "every event up to X" is every event there will ever be up to
X. It never deletes the newest event: the head of the log (``feed_state(None)``,
max(seq)) must never go back, or a reader's cursor would be ahead of it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime

from .._event_watch import EventWatch
from ..base import EventItem, ListCursor
from ..jsoncodec import loads_stored
from ..records import Article, Event
from ._base import PostgresBase, Q
from ._event_watch import listen


class ChangeLogMixin(PostgresBase):
    #: The watchers of ``watch_events``; made by the first one.
    _event_watch: EventWatch | None = None

    async def find_event(self, event_id: str) -> Event | None:
        row = await self._fetch_one(Q["find_event"], event_id)
        return None if row is None else self._event(row)

    async def list_event_items(self, *, after: int = 0, limit: int = 100) -> list[EventItem]:
        rows = await self._fetch(Q["list_event_items"], after, limit)
        return [
            (seq, event_id, event_type, _topics(topics), body)
            for seq, event_id, event_type, topics, body in rows
        ]

    async def event_horizon(self) -> int:
        row = await self._fetch_one(Q["event_horizon"])
        return 0 if row is None else int(row[0])

    async def prune_events(
        self, *, before: datetime, limit: int = 10_000, now: datetime | None = None
    ) -> int:
        if limit <= 0:
            return 0
        async with self._write_transaction() as conn:
            last = await conn.fetchval(Q["prune_events.bound"], before, limit)
            if last is None:
                return 0
            await conn.execute(Q["prune_events.deliveries"], last)
            status = await conn.execute(Q["prune_events"], last)
            await conn.execute(Q["prune_events.horizon"], last)
        return int(status.split()[-1])  # "DELETE n"

    def watch_events(self, callback: Callable[[], None]) -> Callable[[], None]:
        if self._event_watch is None:
            self._event_watch = EventWatch(listen(self._listen_connection))
        return self._event_watch.add(callback)

    async def close(self) -> None:
        if self._event_watch is not None:
            await self._event_watch.close()
        await super().close()

    async def list_changed_articles(
        self, *, since: datetime, after: ListCursor | None = None, limit: int = 50
    ) -> list[Article]:
        when, last_id = max((since, ""), after) if after is not None else (since, "")
        rows = await self._fetch(Q["list_changed_articles"], when, last_id, limit)
        return [self._article(r) for r in rows]


@functools.lru_cache(maxsize=1024)
def _topics(text: str) -> tuple[str, ...]:
    """A stored topic list: the same few recur across events, each parsed once."""
    return tuple(loads_stored(text))
