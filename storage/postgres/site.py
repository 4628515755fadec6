"""The site's own settings (the public base URL) on PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from ..records import utcnow
from ._base import PostgresBase, Q


class SiteMixin(PostgresBase):
    async def site_setting(self, key: str) -> str | None:
        row = await self._fetch_one(Q["get_site_setting"], key)
        return None if row is None else str(row[0])

    async def claim_site_setting(self, key: str, value: str, *, now: datetime | None = None) -> str:
        async with self._transaction() as conn:
            # DO NOTHING waits for a concurrent insert of the key: one value wins.
            await conn.execute(Q["claim_site_setting"], key, value, now or utcnow())
            stored = await conn.fetchval(Q["get_site_setting"], key)
        return str(stored)

    async def set_site_setting(self, key: str, value: str, *, now: datetime | None = None) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["set_site_setting"], key, value, now or utcnow())
