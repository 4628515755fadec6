"""The change log read as an API on postgres: events by id, the pruning horizon and
pruning, wake-ups on new events, and articles changed since a time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ..base import ListCursor
from ..records import Article, Event
from ._base import PostgresBase


class ChangeLogMixin(PostgresBase):
    async def find_event(self, event_id: str) -> Event | None:
        raise NotImplementedError

    async def event_horizon(self) -> int:
        raise NotImplementedError

    async def prune_events(
        self, *, before: datetime, limit: int = 10_000, now: datetime | None = None
    ) -> int:
        raise NotImplementedError

    def watch_events(self, callback: Callable[[], None]) -> Callable[[], None]:
        raise NotImplementedError

    async def list_changed_articles(
        self, *, since: datetime, after: ListCursor | None = None, limit: int = 50
    ) -> list[Article]:
        raise NotImplementedError
