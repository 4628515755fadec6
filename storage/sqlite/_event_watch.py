"""Noticing other processes' commits to a SQLite file, for ``watch_events``.

SQLite has no notifications between processes. What it has is a mark that changes
with every commit, by any connection of any process: the WAL-index header in shared
memory (``_wal_watch.py``; reading it is a memory read, no system call), else
``PRAGMA data_version`` (a read transaction's locks). While anyone watches, one task
looks at it every ``POLL_INTERVAL`` and fires when it moved. Any commit moves it
(a delivery claim too, and a checkpoint restarting the WAL): watchers then read the
head and find nothing new, which costs one indexed read per 20 ms at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from .._event_watch import Notice

#: Between two looks at the change mark: a write by another process is noticed
#: within this (the long-poll answers within ~100 ms of it).
POLL_INTERVAL: Final = 0.02

#: The database's change mark now; None when unknown (SQLite busy, or closing).
ChangeMark = Callable[[], "bytes | int | None"]


def poll(mark: ChangeMark, *, interval: float = POLL_INTERVAL) -> Notice:
    """The ``Notice`` task (``storage._event_watch``): fire whenever ``mark`` moved."""

    async def notice(fire: Callable[[], None]) -> None:
        last = mark()
        while True:
            await asyncio.sleep(interval)
            now = mark()
            if now is not None and now != last:
                last = now
                fire()

    return notice
