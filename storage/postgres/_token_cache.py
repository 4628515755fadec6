"""Bearer tokens by hash, cached per process while PostgreSQL tells it of revocations.

Every API request looks its token up; on PostgreSQL that was one query per request,
about 70% of all statements under write load. A token changes only by being revoked,
and a revocation sends ``NOTIFY syndicate_tokens`` in its own transaction. Each process
keeps its tokens only while it holds a connection LISTENing on that channel:

- a notification (any revocation, in any process) empties the cache;
- losing the LISTEN connection empties and disables the cache (a notification sent
  meanwhile could be missed) until it is back; lookups go to the database meanwhile;
- a lookup that raced a notification is not cached (generation check), so a token read
  just before its revocation committed is not kept;
- entries also expire after ``MAX_AGE`` seconds, a bound should a connection die
  silently.

A revocation committed by another process takes effect here when its notification
arrives: the time for PostgreSQL to send it to an idle connection, well under a
millisecond on one host. Only unrevoked tokens are cached; unknown ones always go to
the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import asyncpg

from ..records import Token

logger = logging.getLogger("syndicate.storage")

CHANNEL: Final = "syndicate_tokens"
MAX_ENTRIES: Final = 10_000
MAX_AGE: Final = 60.0
#: Seconds between attempts to (re)open the LISTEN connection.
RETRY_SECONDS: Final = 5.0

Connect = Callable[[], Awaitable["asyncpg.Connection[asyncpg.Record]"]]


class TokenCache:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._entries: dict[str, tuple[Token, float]] = {}
        self._generation = 0
        self._listener: asyncpg.Connection[asyncpg.Record] | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_try = 0.0
        self._closed = False

    @property
    def listening(self) -> bool:
        return self._listener is not None

    @property
    def generation(self) -> int:
        """Changes whenever cached tokens may have been revoked."""
        return self._generation

    def get(self, token_hash: str) -> Token | None:
        """The cached token, or ``None``: look it up (and ``put`` it)."""
        if self._listener is None:
            self._start_listening()
            return None
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        token, stored = entry
        if time.monotonic() - stored > MAX_AGE:
            del self._entries[token_hash]
            return None
        return token

    def put(self, token_hash: str, token: Token, generation: int) -> None:
        """Cache a token read from the database when ``generation`` (taken before
        the read) is still current and the LISTEN connection is up."""
        if self._listener is None or generation != self._generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[token_hash] = (token, time.monotonic())

    def invalidate(self) -> None:
        self._entries.clear()
        self._generation += 1

    def _start_listening(self) -> None:
        if self._closed or self._task is not None or time.monotonic() < self._next_try:
            return
        self._next_try = time.monotonic() + RETRY_SECONDS
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        conn = None
        try:
            conn = await self._connect()
            conn.add_termination_listener(self._lost)
            await conn.add_listener(CHANNEL, self._notified)
            if self._closed or conn.is_closed():  # closing, or lost already
                conn.terminate()
                return
            self.invalidate()
            self._listener = conn  # no await since the check: _lost cannot come between
        except Exception as exc:
            logger.warning("token cache off: cannot LISTEN", extra={"error": str(exc)})
            if conn is not None:
                conn.terminate()
        except asyncio.CancelledError:
            if conn is not None:
                conn.terminate()
        finally:
            self._task = None

    def _notified(self, *_: Any) -> None:
        self.invalidate()

    def _lost(self, conn: object, *_: Any) -> None:
        if conn is not self._listener:
            return  # an earlier connection, already replaced or given up
        if not self._closed:
            logger.warning("token cache off: the LISTEN connection was lost")
        self._listener = None
        self.invalidate()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        listener, self._listener = self._listener, None
        self.invalidate()
        if listener is not None:
            try:
                async with asyncio.timeout(5):
                    await listener.close()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                listener.terminate()
