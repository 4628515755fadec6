"""The site's own settings (the public base URL) on SQLite."""

from __future__ import annotations

from datetime import datetime

from ..records import format_time, utcnow
from ._base import Q, SQLiteBase


class SiteMixin(SQLiteBase):
    async def site_setting(self, key: str) -> str | None:
        async with self._read(Q["get_site_setting"], (key,)) as rows:
            return str(rows[0][0]) if rows else None

    async def claim_site_setting(self, key: str, value: str, *, now: datetime | None = None) -> str:
        stamp = format_time(now or utcnow())
        async with self._transaction() as conn:
            await conn.execute(Q["claim_site_setting"], (key, value, stamp))
            row = await self._one(conn, Q["get_site_setting"], (key,))
        assert row is not None
        return str(row[0])

    async def set_site_setting(self, key: str, value: str, *, now: datetime | None = None) -> None:
        stamp = format_time(now or utcnow())
        async with self._transaction() as conn:
            await conn.execute(Q["set_site_setting"], (key, value, stamp))
