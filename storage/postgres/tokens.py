"""API tokens on PostgreSQL, cached until one is revoked (``_token_cache``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from ..errors import (
    TokenAlreadyRevoked,
    TokenExists,
    TokenNameKeepsRole,
)
from ..records import (
    Role,
    Token,
    utcnow,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]


from ._base import PostgresBase, Q


class TokensMixin(PostgresBase):
    async def create_token(
        self, *, name: str, role: Role, token_hash: str, now: datetime | None = None
    ) -> Token:
        async with self._transaction() as conn:
            # A name owns its subscriptions: it keeps the role of its last token. The
            # last token read live, even if revoked as we read, refuses another role.
            last = await conn.fetchrow(Q["insert_token.last_of_name"], name)
            if last is not None and last["role"] != role:
                if last["revoked_at"] is None:
                    raise TokenExists(name)
                raise TokenNameKeepsRole(name, last["role"])
            try:
                row = await conn.fetchrow(
                    Q["insert_token"], name, role, token_hash, now or utcnow()
                )
            except asyncpg.UniqueViolationError:
                raise TokenExists(name) from None
        assert row is not None
        return self._record(Token, row)

    async def get_token_by_hash(self, token_hash: str) -> Token | None:
        cached = self._tokens.get(token_hash)
        if cached is not None:
            return cached
        generation = self._tokens.generation
        row = await self._fetch_one(Q["get_token_by_hash"], token_hash)
        if row is None:
            return None
        token = self._record(Token, row)
        self._tokens.put(token_hash, token, generation)
        return token

    async def touch_token(self, token_id: int, *, now: datetime | None = None) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["touch_token"], now or utcnow(), token_id)

    async def count_tokens(self) -> int:
        rows = await self._fetch(Q["count_tokens"])
        return int(rows[0][0])

    async def list_tokens(self) -> list[Token]:
        return [self._record(Token, r) for r in await self._fetch(Q["list_tokens"])]

    async def get_live_token(self, name: str) -> Token | None:
        row = await self._fetch_one(Q["get_live_token"], name)
        return None if row is None else self._record(Token, row)

    async def revoke_token(self, name: str, *, now: datetime | None = None) -> Token | None:
        async with self._transaction() as conn:
            row = await conn.fetchrow(Q["revoke_token"], now or utcnow(), name)
            if row is not None:
                # Delivered at commit to every process caching tokens (_token_cache).
                await conn.execute(Q["pg_notify_token_revoked"])
        self._tokens.invalidate()
        if row is not None:
            return self._record(Token, row)
        revoked = await self._fetch_one(Q["revoke_token.last_revoked"], name)
        if revoked is not None:
            raise TokenAlreadyRevoked(name, self._record(Token, revoked).revoked_at)
        return None
