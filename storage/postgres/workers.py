"""Live worker processes and their delivery claims on PostgreSQL."""

from __future__ import annotations

from collections.abc import (
    Sequence,
)
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from ..records import (
    Worker,
    utcnow,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]


from ._base import PostgresBase, Q


class WorkersMixin(PostgresBase):
    async def register_worker(
        self, worker_id: str, *, hostname: str, pid: int, kind: str, now: datetime | None = None
    ) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["register_worker"], worker_id, hostname, pid, kind, now)

    async def heartbeat_worker(self, worker_id: str, *, now: datetime | None = None) -> bool:
        async with self._transaction() as conn:
            found = await conn.fetchval(Q["heartbeat_worker"], now, worker_id)
        return found is not None

    async def unregister_worker(self, worker_id: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["unregister_worker"], worker_id)

    async def release_workers(
        self,
        *,
        stale_after: timedelta,
        keep: str,
        dead: Sequence[str] = (),
        now: datetime | None = None,
    ) -> dict[str, int]:
        async with self._transaction() as conn:
            rows = await conn.fetch(Q["release_workers"], stale_after, list(dead), keep, now)
        return {r["id"]: r["released"] for r in rows}

    async def list_workers(self, *, now: datetime | None = None) -> list[Worker]:
        rows = await self._fetch(Q["list_workers"], now or utcnow())
        return [self._record(Worker, r) for r in rows]
