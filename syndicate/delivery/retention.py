"""Retention of the change log: events (with their ended deliveries) and recorded
delivery attempts older than ``event_retention`` are pruned in the background, at
start and then every ``PRUNE_INTERVAL``, by every ``serve`` and ``worker`` (pruning
is idempotent; two processes at it at once delete each row once). Expired portal
sessions and spent or expired sign-in links go in the same round.
The first round waits ``START_DELAY`` after start: a process that starts prunes
soon, but not while it (or a test) is getting up.

An event still needed (a delivery pending or failing, a fan-out not past it) stops
the pruning there: the log stays contiguous, and ``Storage.event_horizon`` tells
readers where it begins.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from storage import Storage, StorageError
from storage.records import utcnow
from syndicate.core.settings import Settings

logger = logging.getLogger(__name__)

#: Seconds between two pruning rounds, and before the first.
PRUNE_INTERVAL = 3600.0
START_DELAY = 60.0
#: Rows deleted per transaction. Pruning holds the write lock: measured on 200,000
#: events, 10,000 at a time held it 90-180 ms on either backend (a stream's whole
#: latency budget is 250 ms), 1,000 at a time 5 ms (SQLite) to 26 ms (PostgreSQL).
PRUNE_BATCH = 1_000
#: Batches one round deletes at most (the next round goes on).
MAX_BATCHES = 1_000


@dataclass(frozen=True)
class Pruned:
    events: int
    attempts: int
    portal: int = 0


class Retention:
    """Prunes the change log and the attempt log; ``run_once`` does one round now."""

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        *,
        interval: float = PRUNE_INTERVAL,
        start_delay: float = START_DELAY,
        batch: int = PRUNE_BATCH,
    ) -> None:
        self.storage = storage
        self.retention = timedelta(seconds=settings.event_retention)
        self.interval = interval
        self.start_delay = start_delay
        self.batch = batch

    async def run_once(self) -> Pruned:
        """Delete what is older than the retention, in batches; returns the counts."""
        now = utcnow()
        before = now - self.retention
        events = attempts = portal = 0
        for _ in range(MAX_BATCHES):
            deleted = await self.storage.prune_events(before=before, limit=self.batch)
            events += deleted
            if deleted < self.batch:
                break
        for _ in range(MAX_BATCHES):
            deleted = await self.storage.prune_attempts(before=before, limit=self.batch)
            attempts += deleted
            if deleted < self.batch:
                break
        for _ in range(MAX_BATCHES):
            deleted = await self.storage.prune_portal(now=now, limit=self.batch)
            portal += deleted
            if deleted < self.batch:
                break
        if events or attempts or portal:
            logger.info(
                "pruned the change log",
                extra={
                    "events": events,
                    "attempts": attempts,
                    "portal": portal,
                    "before": before.isoformat(),
                },
            )
        return Pruned(events, attempts, portal)

    async def run(self) -> None:
        await asyncio.sleep(self.start_delay)
        while True:
            try:
                await self.run_once()
            except StorageError as exc:
                logger.warning("pruning the change log failed: %s", exc)
            await asyncio.sleep(self.interval)
