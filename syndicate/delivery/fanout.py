"""The fan-out: new events become deliveries, one per matching subscription.

One loop per kind of subscription, each with a cursor of its own in the database
(so several processes may run it; the writes are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from storage import Storage, StorageError
from storage.records import SubscriptionKind
from syndicate.delivery import webhooks

logger = logging.getLogger("syndicate.delivery")

#: How long a loop waits for a wake-up before it looks for work anyway.
POLL_INTERVAL = 1.0
#: The fan-out's cursor per kind (the webhooks' keeps the name of the one before).
FANOUT_CURSORS: dict[SubscriptionKind, str] = {
    "webhook": "deliveries",
    "websub": "deliveries:websub",
}
FANOUT_BATCH = 500
FANOUT_CHUNK = 1000


class FanOut:
    """Turns new events into deliveries for one kind of subscription. Woken after
    local commits; polls for others'.

    Each kind has a loop and a cursor of its own: thousands of WebSub callbacks (anyone
    may subscribe) take a while to match and write, and a partner's deliveries must
    not wait for them. The rows go in writes of FANOUT_CHUNK, so that a claim (on
    SQLite a write too) is not queued behind thousands of them; the cursor moves with
    the last write, and a crash before it repeats the earlier ones, which create
    nothing twice."""

    def __init__(
        self, storage: Storage, *, kind: SubscriptionKind, on_created: Callable[[], None]
    ) -> None:
        self.storage = storage
        self.kind = kind
        self.cursor = FANOUT_CURSORS[kind]
        self.on_created = on_created
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> int:
        """Fan out one batch of events; returns how many events it read (0: none
        are left to read)."""
        cursor = await self.storage.get_cursor(self.cursor)
        # The last event, read before the subscriptions: every event up to it was
        # committed before any subscription that this read of them does not see.
        head = (await self.storage.feed_state(None)).seq
        if head <= cursor:
            return 0
        subscriptions = await self.storage.list_active_subscriptions(kind=self.kind)
        if not subscriptions:
            # Nobody to deliver to: pass every event so far without reading them
            # (as reading them and matching none would, at a fraction of the cost).
            await self.storage.fan_out([], cursor=self.cursor, up_to=head)
            return 0
        events = await self.storage.list_events(after=cursor, limit=FANOUT_BATCH, with_data=False)
        # Only events up to the head: later ones may be older than a subscription
        # that the list read above does not show yet.
        events = [e for e in events if e.seq <= head]
        if not events:
            return 0
        pairs = [(e.seq, s.id) for e in events for s in subscriptions if webhooks.matches(s, e)]
        writes = [pairs[i : i + FANOUT_CHUNK] for i in range(0, len(pairs), FANOUT_CHUNK)] or [[]]
        for n, write in enumerate(writes, start=1):
            up_to = events[-1].seq if n == len(writes) else cursor
            started = time.monotonic()
            if await self.storage.fan_out(write, cursor=self.cursor, up_to=up_to):
                self.on_created()
            if self.kind == "websub":
                # At most half the time writing: a flood of WebSub subscriptions slows
                # WebSub notifications, not the database that partners' deliveries need.
                await asyncio.sleep(time.monotonic() - started)
        return len(events)

    async def run(self) -> None:
        while True:
            try:
                if await self.run_once():
                    continue
            except StorageError as exc:
                logger.warning("fan-out failed; retrying", extra={"error": str(exc)})
            except Exception:
                logger.exception("fan-out failed unexpectedly; retrying")
            self._wake.clear()
            await nap(self._wake)


async def nap(wake: asyncio.Event) -> None:
    """Wait until ``wake`` is set or ``POLL_INTERVAL`` passes. Not ``asyncio.wait_for``:
    on Python 3.11 it swallows a cancellation that arrives just as the event is set, and
    a loop waiting that way never stops (shutdown hung on it)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(POLL_INTERVAL):
            await wake.wait()
