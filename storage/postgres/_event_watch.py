"""Hearing of events committed by any process on the same PostgreSQL, for ``watch_events``.

Every statement inserting events notifies ``syndicate_events`` (a trigger, migration
0009), delivered at commit. While anyone watches, the storage holds one connection
of its own LISTENing on that channel (outside the pool, like the token cache's) and
fires on each notification: another process's commit is heard in about a
millisecond, and this process's own come back the same way.

Losing the connection (a server restart, a network cut noticed) must not leave
watchers asleep: until it is back, the watchers are fired every
``FALLBACK_INTERVAL`` so that they read the head themselves, and a new connection is
tried every ``RETRY_SECONDS``. Once listening again it fires once, for whatever was
committed while nobody listened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import asyncpg

from .._event_watch import Notice

logger = logging.getLogger("storage.events")

CHANNEL: Final = "syndicate_events"
#: While not listening, the watchers are fired this often (they poll the head).
FALLBACK_INTERVAL: Final = 0.5
#: Seconds between attempts to (re)open the LISTEN connection.
RETRY_SECONDS: Final = 2.0
#: How long a LISTEN connection may take to close before it is dropped.
CLOSE_TIMEOUT: Final = 5.0

Connect = Callable[[], Awaitable["asyncpg.Connection[asyncpg.Record]"]]


def listen(connect: Connect) -> Notice:
    """The ``Notice`` task (``storage._event_watch``): LISTEN, fire on each
    notification; poll while the connection is down."""

    async def notice(fire: Callable[[], None]) -> None:
        while True:
            started = time.monotonic()
            await _listen_once(connect, fire)
            # Down: the watchers poll until the next try.
            retry_at = started + RETRY_SECONDS
            while True:
                fire()
                left = retry_at - time.monotonic()
                if left <= 0:
                    break
                await asyncio.sleep(min(FALLBACK_INTERVAL, left))

    return notice


async def _listen_once(connect: Connect, fire: Callable[[], None]) -> None:
    """Listen until the connection is lost (returns) or the task is cancelled."""
    conn: asyncpg.Connection[asyncpg.Record] | None = None
    lost = asyncio.Event()

    def notified(*_: Any) -> None:
        fire()

    def terminated(*_: Any) -> None:
        lost.set()

    try:
        conn = await connect()
        conn.add_termination_listener(terminated)
        await conn.add_listener(CHANNEL, notified)
        if conn.is_closed():
            lost.set()
        else:
            fire()  # what was committed before the LISTEN took effect
        await lost.wait()
        logger.warning("event watch: the LISTEN connection was lost; polling meanwhile")
    except asyncio.CancelledError:
        if conn is not None:
            await _close(conn)
        raise
    except Exception as exc:
        logger.warning("event watch: cannot LISTEN; polling meanwhile", extra={"error": str(exc)})
    if conn is not None:
        conn.terminate()


async def _close(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()
