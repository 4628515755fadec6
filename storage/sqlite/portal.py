"""Portal sessions and single-use sign-in links on SQLite (issue 22). A token's
sessions and unused links are deleted when it is revoked (``TokensMixin``)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from ..records import PortalSession, Token, format_time, parse_time, utcnow
from ._base import Q, SQLiteBase
from ._rows import to_token


class PortalMixin(SQLiteBase):
    async def create_portal_session(
        self,
        *,
        session_hash: str,
        token_id: int,
        expires_at: datetime,
        now: datetime | None = None,
    ) -> None:
        params = (session_hash, token_id, format_time(now or utcnow()), format_time(expires_at))
        async with self._transaction() as conn:
            await conn.execute(Q["create_portal_session"], params)

    async def get_portal_session(
        self, session_hash: str, *, now: datetime | None = None
    ) -> PortalSession | None:
        # Asked on every portal page: a point read on the loop's thread, as a token is.
        params = (session_hash, format_time(now or utcnow()))
        rows = self._read_inline(Q["get_portal_session"], params)
        if rows is None:
            async with self._read(Q["get_portal_session"], params) as fetched:
                rows = fetched
        if not rows:
            return None
        row = rows[0]
        return PortalSession(
            token=to_token(row),
            created_at=parse_time(row["session_created_at"]),
            expires_at=parse_time(row["session_expires_at"]),
        )

    async def delete_portal_session(self, session_hash: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["delete_portal_session"], (session_hash,))

    async def delete_portal_sessions(self, token_id: int) -> int:
        async with self._transaction() as conn:
            async with conn.execute(Q["delete_portal_sessions"], (token_id,)) as cur:
                return max(cur.rowcount, 0)

    async def create_portal_link(
        self,
        *,
        link_hash: str,
        token_id: int,
        expires_at: datetime,
        now: datetime | None = None,
    ) -> None:
        params = (link_hash, token_id, format_time(now or utcnow()), format_time(expires_at))
        async with self._transaction() as conn:
            await conn.execute(Q["create_portal_link"], params)

    async def use_portal_link(self, link_hash: str, *, now: datetime | None = None) -> Token | None:
        params = {"link_hash": link_hash, "now": format_time(now or utcnow())}

        def use(conn: sqlite3.Connection) -> Token | None:
            # Rows read to the end: a statement left open would keep COMMIT from ending.
            spent = conn.execute(Q["use_portal_link"], params).fetchall()
            if not spent:
                return None
            (row,) = conn.execute(Q["use_portal_link.token"], (spent[0]["token_id"],)).fetchall()
            return to_token(row)

        return await self._in_writer(use)

    async def prune_portal(self, *, now: datetime | None = None, limit: int = 10_000) -> int:
        stamp = format_time(now or utcnow())

        def prune(conn: sqlite3.Connection) -> int:
            sessions = max(conn.execute(Q["prune_portal"], (stamp, limit)).rowcount, 0)
            if sessions >= limit:
                return sessions
            links = conn.execute(Q["prune_portal.links"], (stamp, limit - sessions)).rowcount
            return sessions + max(links, 0)

        return await self._in_writer(prune)
