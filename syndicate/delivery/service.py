"""Push delivery, started and stopped as one: the fan-out (events -> deliveries,
fanout.py), the dispatcher (deliveries -> HTTP, dispatcher.py), the sender behind
the egress guard (sender.py, egress.py), the heartbeat (liveness.py), the
scheduler that publishes scheduled articles when their time comes (scheduler.py)
and the pruning of the change log past its retention (retention.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from storage import Storage
from storage.records import SUBSCRIPTION_KINDS
from syndicate.core.settings import Settings
from syndicate.delivery.dispatcher import Dispatcher
from syndicate.delivery.egress import Resolver
from syndicate.delivery.fanout import FanOut
from syndicate.delivery.liveness import Liveness
from syndicate.delivery.retention import Retention
from syndicate.delivery.scheduler import Scheduler
from syndicate.delivery.sender import Sender
from syndicate.delivery.webhooks import body_renderer

if TYPE_CHECKING:
    from syndicate.delivery.metrics import Metrics


class DeliveryService:
    """Sender + FanOut + Dispatcher + Liveness + Scheduler + Retention, run as background
    tasks of one process.
    ``kind``: what ``syndicate workers`` shows the process as (serve or worker)."""

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        resolver: Resolver | None = None,
        kind: str = "serve",
    ) -> None:
        self.sender = Sender(settings, resolver=resolver)
        self.dispatcher = Dispatcher(storage, settings, self.sender, metrics=metrics)
        self.fanouts = [
            FanOut(storage, kind=kind, on_created=self.dispatcher.wake)
            for kind in SUBSCRIPTION_KINDS
        ]
        self.liveness = Liveness(
            storage,
            settings,
            self.dispatcher.worker_id,
            kind=kind,
            on_released=self.dispatcher.wake,
        )
        self.scheduler = Scheduler(storage, on_published=self._wake_fanouts)
        self.retention = Retention(storage, settings)
        self._storage = storage
        self._base_url = settings.base_url
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def worker_id(self) -> str:
        return self.dispatcher.worker_id

    def notify(self, *, scheduled: bool = True) -> None:
        """Something was committed here: fan out now rather than at the next poll, and
        (``scheduled``: the write may have scheduled an article) have the scheduler look
        again for the next scheduled article. A write that scheduled nothing passes
        False: waking it costs a query per write (a third of single-POST ingest)."""
        self._wake_fanouts()
        if scheduled:
            self.scheduler.wake()

    def _wake_fanouts(self) -> None:
        for fanout in self.fanouts:
            fanout.wake()

    async def start(self) -> None:
        # Every process that writes events runs this (serve's app, the worker, whose
        # scheduler publishes): each event is stored with its webhook body.
        self._storage.set_event_renderer(body_renderer(self._base_url))
        await self.sender.start()
        # Registered before the first claim, so that no live process takes this one's
        # claims for a dead process's.
        await self.liveness.start()
        self._tasks = [
            *(
                asyncio.create_task(f.run(), name=f"syndicate-fanout-{f.kind}")
                for f in self.fanouts
            ),
            asyncio.create_task(self.dispatcher.run(), name="syndicate-dispatcher"),
            asyncio.create_task(self.liveness.run(), name="syndicate-heartbeat"),
            asyncio.create_task(self.scheduler.run(), name="syndicate-scheduler"),
            asyncio.create_task(self.retention.run(), name="syndicate-retention"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        # After the dispatcher handed its claims back.
        await self.liveness.stop()
        await self.sender.close()
