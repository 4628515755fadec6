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

logger = logging.getLogger("syndicate.delivery")

#: How long a loop waits for a wake-up before it looks for work anyway.
POLL_INTERVAL = 1.0
#: The fan-out's cursor per kind (the webhooks' keeps the name of the one before).
FANOUT_CURSORS: dict[SubscriptionKind, str] = {
    "webhook": "deliveries",
    "websub": "deliveries:websub",
}
FANOUT_BATCH = 500
#: WebSub's fan-out steps are this much smaller than the storage's.
WEBSUB_STEP_DIVISOR = 10


class FanOut:
    """Turns new events into deliveries for one kind of subscription. Woken after
    local commits; polls for others'.

    Each kind has a loop and a cursor of its own: thousands of WebSub callbacks (anyone
    may subscribe) take a while to match and write, and a partner's deliveries must
    not wait for them. The matching is the database's (``fan_out_events``: one
    statement joins a batch of events to the subscriptions), in steps over the
    subscriptions of about ``storage.fan_out_step`` pairs each (on SQLite, so that a
    claim is not queued behind a hundred thousand rows); the cursor moves with the
    last step, and a crash before it repeats the earlier ones, which create nothing
    twice."""

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
        # committed before any subscription that the steps below do not see.
        head = (await self.storage.feed_state(None)).seq
        if head <= cursor:
            return 0
        events = await self.storage.list_events(after=cursor, limit=FANOUT_BATCH, with_data=False)
        # Only events up to the head: later ones may be older than a subscription
        # that a step does not see.
        events = [e for e in events if e.seq <= head]
        if not events:
            return 0
        # WebSub's in smaller steps: anyone may subscribe, and partners' claims (and
        # on SQLite their fan-out) must not queue behind a flood of callbacks.
        pairs = self.storage.fan_out_step // (WEBSUB_STEP_DIVISOR if self.kind == "websub" else 1)
        per_step = max(1, pairs // len(events))
        after_subscription = ""
        while True:
            started = time.monotonic()
            step = await self.storage.fan_out_events(
                kind=self.kind,
                cursor=self.cursor,
                after=cursor,
                up_to=events[-1].seq,
                after_subscription=after_subscription,
                limit=per_step,
            )
            if step.created:
                self.on_created()
            if step.done and step.last_subscription is None and not after_subscription:
                # Nobody to deliver to: pass every event so far without reading them
                # (as matching them against none would, at a fraction of the cost).
                await self.storage.fan_out([], cursor=self.cursor, up_to=head)
            if self.kind == "websub":
                # At most half the time writing: a flood of WebSub subscriptions slows
                # WebSub notifications, not the database that partners' deliveries need.
                await asyncio.sleep(time.monotonic() - started)
            if step.done or step.last_subscription is None:
                return len(events)
            after_subscription = step.last_subscription

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
