"""Topics, feed state (cached until anyone commits) and the event log on SQLite."""

from __future__ import annotations

from datetime import datetime

from ..errors import (
    TopicNotFound,
)
from ..records import (
    Event,
    FeedState,
    Topic,
    format_time,
    utcnow,
)
from ._base import Q, SQLiteBase
from ._rows import (
    text_time,
    to_event,
    to_topic,
)

#: Topics whose feed state is kept between changes (one process's memory bound).
MAX_CACHED_FEED_STATES = 10_000


class TopicsMixin(SQLiteBase):
    async def list_topics(self) -> list[Topic]:
        async with self._read(Q["list_topics"]) as rows:
            return [to_topic(r) for r in rows]

    async def get_topic(self, slug: str) -> Topic:
        async with self._read(Q["get_topic"], (slug,)) as rows:
            if not rows:
                raise TopicNotFound(slug)
            return to_topic(rows[0])

    async def put_topic(
        self, slug: str, *, title: str, description: str, now: datetime | None = None
    ) -> tuple[Topic, bool]:
        stamp = format_time(now or utcnow())
        async with self._transaction() as conn:
            params = (slug, title, description, stamp)
            created = await self._one(conn, Q["insert_topic"], params) is not None
            if not created:
                await conn.execute(Q["update_topic"], params)
            row = await self._one(conn, Q["get_topic"], (slug,))
        assert row is not None
        return to_topic(row), created

    def _change_mark(self) -> bytes | int | None:
        """A value that changes whenever anyone commits (None: unknown, SQLite busy)."""
        if self._wal_watch is not None and not self._closed:
            header = self._wal_watch.header()
            if header is not None:
                return header
        version = self._read_inline(Q["sqlite_data_version"], ())
        return None if version is None else int(version[0][0])

    def cached_feed_state(self, topic: str | None) -> FeedState | None:
        watch = self._wal_watch
        if watch is None or self._closed:
            return None
        header = watch.header()
        if header is None or header != self._data_version:
            return None
        return self._feed_states.get(topic)

    async def feed_state(self, topic: str | None) -> FeedState:
        version = self._change_mark()
        if version is not None:
            if version != self._data_version:
                self._feed_states.clear()
                self._data_version = version
            else:
                cached = self._feed_states.get(topic)
                if cached is not None:
                    return cached
        params: tuple[str, ...] = ()
        if topic is None:
            query = Q["all_feed_state"]
        else:
            query, params = Q["topic_feed_state"], (topic,)
        rows = self._read_inline(query, params)
        if rows is None:
            async with self._read(query, params) as fetched:
                rows = fetched
        if not rows:
            if topic is not None:
                raise TopicNotFound(topic)
            return FeedState(0, None, None)
        row = rows[0]
        state = FeedState(row["seq"], text_time(row["changed_at"]), text_time(row["updated_at"]))
        if (
            version is not None
            and self._data_version == version  # no newer reader cleared it meanwhile
            and len(self._feed_states) < MAX_CACHED_FEED_STATES
        ):
            # Read after data_version: if a commit came in between, the next call
            # sees a new version and reads again.
            self._feed_states[topic] = state
        return state

    # -- events -----------------------------------------------------------------

    async def list_events(
        self, *, after: int = 0, limit: int = 100, with_data: bool = True
    ) -> list[Event]:
        query = Q["list_events"] if with_data else Q["list_event_heads"]
        rows = await self._read_rows(query, (after, limit))
        return sorted((to_event(r) for r in rows), key=lambda e: e.seq)
