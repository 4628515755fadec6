"""Live worker processes and their delivery claims on SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from ..records import (
    Worker,
    format_time,
    utcnow,
)
from ._base import Q, SQLiteBase
from ._rows import (
    to_worker,
)


class WorkersMixin(SQLiteBase):
    async def register_worker(
        self, worker_id: str, *, hostname: str, pid: int, kind: str, now: datetime | None = None
    ) -> None:
        params = {
            "id": worker_id,
            "hostname": hostname,
            "pid": pid,
            "kind": kind,
            "now": format_time(now or utcnow()),
        }
        async with self._transaction() as conn:
            await conn.execute(Q["register_worker"], params)

    async def heartbeat_worker(self, worker_id: str, *, now: datetime | None = None) -> bool:
        async with self._transaction() as conn:
            row = await self._one(
                conn, Q["heartbeat_worker"], (format_time(now or utcnow()), worker_id)
            )
        return row is not None

    async def unregister_worker(self, worker_id: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["unregister_worker"], (worker_id,))

    async def release_workers(
        self,
        *,
        stale_after: timedelta,
        keep: str,
        dead: Sequence[str] = (),
        now: datetime | None = None,
    ) -> dict[str, int]:
        params = {
            "stale_before": format_time((now or utcnow()) - stale_after),
            "dead": json.dumps(list(dead)),
            "keep": keep,
        }

        def release(conn: sqlite3.Connection) -> dict[str, int]:
            ids = [row[0] for row in conn.execute(Q["release_workers.dead"], params)]
            if not ids:
                return {}
            released = dict.fromkeys(ids, 0)
            for worker, count in conn.execute(
                Q["release_workers.count_claims"], (json.dumps(ids),)
            ):
                released[worker] = count
            conn.execute(Q["release_workers.release_claims"], (json.dumps(ids),))
            conn.execute(Q["release_workers.delete_workers"], (json.dumps(ids),))
            return released

        return await self._in_writer(release)

    async def list_workers(self, *, now: datetime | None = None) -> list[Worker]:
        async with self._read(Q["list_workers"], {"now": format_time(now or utcnow())}) as rows:
            return [to_worker(r) for r in rows]
