"""The scheduler: scheduled articles are published when their time comes.

An article written with a future ``published_at`` waits in storage (``scheduled``)
with no event. This loop sleeps until the earliest such time, then has storage
publish every due one (``Storage.publish_due``): that writes their
``article.published`` events, which the fan-out pushes like any other. It runs in
every process that delivers (``serve`` and ``worker``); storage publishes each article
once however many call it, and all state is in the database, so a restart loses
nothing: a process started after the time publishes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from storage import Storage, StorageError
from storage.records import utcnow

logger = logging.getLogger("syndicate.delivery")

#: The longest sleep between two looks: another process may schedule an earlier
#: article meanwhile (a write in this process wakes the loop at once).
MAX_SLEEP = 2.0
#: The pause after finding due articles gone (another process published them).
RETRY_SLEEP = 0.1


def seconds_until(when: datetime | None, now: datetime) -> float:
    """How long to sleep before looking again: until ``when``, at most ``MAX_SLEEP``."""
    if when is None:
        return MAX_SLEEP
    return min(max((when - now).total_seconds(), 0.0), MAX_SLEEP)


class Scheduler:
    """Publishes due scheduled articles; ``on_published`` runs after each batch
    (the fan-out's wake-up)."""

    def __init__(self, storage: Storage, *, on_published: Callable[[], None]) -> None:
        self.storage = storage
        self.on_published = on_published
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was written here: it may be the earliest scheduled article."""
        self._wake.set()

    async def run_once(self) -> float:
        """Publish what is due; returns how long to sleep before the next look."""
        upcoming = await self.storage.next_scheduled()
        now = utcnow()
        while upcoming is not None and upcoming <= now:
            published = await self.storage.publish_due(now=now)
            if not published:
                # Another process took them between the two reads.
                return RETRY_SLEEP
            logger.info(
                "published scheduled articles",
                extra={"articles": len(published), "ids": [a.id for a in published[:10]]},
            )
            self.on_published()
            upcoming = await self.storage.next_scheduled()
            now = utcnow()
        return seconds_until(upcoming, now)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                pause = await self.run_once()
            except StorageError as exc:
                logger.warning(
                    "publishing scheduled articles failed; retrying", extra={"error": str(exc)}
                )
                pause = MAX_SLEEP
            except Exception:
                logger.exception("publishing scheduled articles failed unexpectedly; retrying")
                pause = MAX_SLEEP
            with contextlib.suppress(TimeoutError):
                # Not asyncio.wait_for: see fanout.nap.
                async with asyncio.timeout(pause):
                    await self._wake.wait()
