"""Portal sessions and single-use sign-in links on PostgreSQL (issue 22). A token's
sessions and unused links are deleted by ``revoke_token``'s own statement."""

from __future__ import annotations

from datetime import UTC, datetime

from ..records import PortalSession, Token, utcnow
from ._base import PostgresBase, Q


class PortalMixin(PostgresBase):
    async def create_portal_session(
        self,
        *,
        session_hash: str,
        token_id: int,
        expires_at: datetime,
        now: datetime | None = None,
    ) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                Q["create_portal_session"], session_hash, token_id, now or utcnow(), expires_at
            )

    async def get_portal_session(
        self, session_hash: str, *, now: datetime | None = None
    ) -> PortalSession | None:
        row = await self._fetch_one(Q["get_portal_session"], session_hash, now or utcnow())
        if row is None:
            return None
        return PortalSession(
            token=self._record(Token, row),
            created_at=row["session_created_at"].astimezone(UTC),
            expires_at=row["session_expires_at"].astimezone(UTC),
        )

    async def delete_portal_session(self, session_hash: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["delete_portal_session"], session_hash)

    async def delete_portal_sessions(self, token_id: int) -> int:
        async with self._transaction() as conn:
            return int(await conn.fetchval(Q["delete_portal_sessions"], token_id))

    async def create_portal_link(
        self,
        *,
        link_hash: str,
        token_id: int,
        expires_at: datetime,
        now: datetime | None = None,
    ) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                Q["create_portal_link"], link_hash, token_id, now or utcnow(), expires_at
            )

    async def use_portal_link(self, link_hash: str, *, now: datetime | None = None) -> Token | None:
        # A transaction, not _fetch: _fetch sends a read again on a fresh connection
        # when the first died, and a use that had committed would then find itself spent.
        async with self._transaction() as conn:
            row = await conn.fetchrow(Q["use_portal_link"], link_hash, now or utcnow())
        return None if row is None else self._record(Token, row)

    async def prune_portal(self, *, now: datetime | None = None, limit: int = 10_000) -> int:
        async with self._transaction() as conn:
            return int(await conn.fetchval(Q["prune_portal"], now or utcnow(), limit))
