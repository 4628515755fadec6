"""Topics, feed state and the event log on PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from ..errors import (
    TopicNotFound,
)
from ..records import (
    Event,
    FeedState,
    Topic,
    utcnow,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]


from ._base import PostgresBase, Q


class TopicsMixin(PostgresBase):
    async def list_topics(self) -> list[Topic]:
        return [self._record(Topic, r) for r in await self._fetch(Q["list_topics"])]

    async def get_topic(self, slug: str) -> Topic:
        row = await self._fetch_one(Q["get_topic"], slug)
        if row is None:
            raise TopicNotFound(slug)
        return self._record(Topic, row)

    async def put_topic(
        self, slug: str, *, title: str, description: str, now: datetime | None = None
    ) -> tuple[Topic, bool]:
        stamp = now or utcnow()
        async with self._transaction() as conn:
            # DO NOTHING waits for a concurrent insert of the same slug, so
            # exactly one caller reports "created".
            created = await conn.fetchval(Q["insert_topic"], slug, title, description, stamp)
            if created is None:
                await conn.execute(Q["update_topic"], slug, title, description, stamp)
            row = await conn.fetchrow(Q["get_topic"], slug)
        assert row is not None
        return self._record(Topic, row), created is not None

    def cached_feed_state(self, topic: str | None) -> FeedState | None:
        return None  # every read asks the server: other machines write too

    async def feed_state(self, topic: str | None) -> FeedState:
        if topic is None:
            row = await self._fetch_one(Q["all_feed_state"])
        else:
            row = await self._fetch_one(Q["topic_feed_state"], topic)
            if row is None:
                raise TopicNotFound(topic)
        if row is None:
            return FeedState(0, None, None)
        return self._record(FeedState, row)

    # -- events -----------------------------------------------------------------

    async def list_events(
        self, *, after: int = 0, limit: int = 100, with_data: bool = True
    ) -> list[Event]:
        query = Q["list_events"] if with_data else Q["list_event_heads"]
        return [self._event(r) for r in await self._fetch(query, after, limit)]
