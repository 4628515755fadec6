"""API tokens on SQLite."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from ..errors import (
    StorageError,
    TokenAlreadyRevoked,
    TokenExists,
    TokenNameKeepsRole,
)
from ..records import (
    Role,
    Token,
    format_time,
    utcnow,
)
from ._base import Q, SQLiteBase
from ._rows import (
    to_token,
)


class TokensMixin(SQLiteBase):
    async def create_token(
        self, *, name: str, role: Role, token_hash: str, now: datetime | None = None
    ) -> Token:
        try:
            async with self._transaction() as conn:
                last = await self._one(conn, Q["insert_token.last_of_name"], (name,))
                if last is not None and last["role"] != role:
                    if last["revoked_at"] is None:
                        raise TokenExists(name)
                    raise TokenNameKeepsRole(name, last["role"])
                params = (name, role, token_hash, format_time(now or utcnow()))
                row = await self._one(conn, Q["insert_token"], params)
        except StorageError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise TokenExists(name) from None
            raise
        assert row is not None
        return to_token(row)

    async def get_token_by_hash(self, token_hash: str) -> Token | None:
        rows = self._read_inline(Q["get_token_by_hash"], (token_hash,))
        if rows is None:
            async with self._read(Q["get_token_by_hash"], (token_hash,)) as fetched:
                rows = fetched
        return to_token(rows[0]) if rows else None

    async def touch_token(self, token_id: int, *, now: datetime | None = None) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["touch_token"], (format_time(now or utcnow()), token_id))

    async def count_tokens(self) -> int:
        async with self._read(Q["count_tokens"]) as rows:
            return int(rows[0][0])

    async def list_tokens(self) -> list[Token]:
        async with self._read(Q["list_tokens"]) as rows:
            return [to_token(r) for r in rows]

    async def get_live_token(self, name: str) -> Token | None:
        async with self._read(Q["get_live_token"], (name,)) as rows:
            return to_token(rows[0]) if rows else None

    async def revoke_token(self, name: str, *, now: datetime | None = None) -> Token | None:
        async with self._transaction() as conn:
            row = await self._one(conn, Q["revoke_token"], (format_time(now or utcnow()), name))
            if row is not None:
                await conn.execute(Q["revoke_token.portal_sessions"], (row["id"],))
                await conn.execute(Q["revoke_token.portal_links"], (row["id"],))
        if row is not None:
            return to_token(row)
        async with self._read(Q["revoke_token.last_revoked"], (name,)) as rows:
            if rows:
                raise TokenAlreadyRevoked(name, to_token(rows[0]).revoked_at)
        return None
