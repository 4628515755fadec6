"""Outcomes of delivery attempts: delivered, failed with a retry time (the schedule,
jittered, or the partner's ``Retry-After``), or dead; written back in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from storage import Storage, StorageError
from storage.records import Delivery, DeliveryOutcome, utcnow
from syndicate.core.settings import Settings
from syndicate.delivery.sender import Attempt

if TYPE_CHECKING:
    from syndicate.delivery.metrics import Metrics

logger = logging.getLogger("syndicate.delivery")

FLUSH_INTERVAL = 0.02
JITTER = 0.2


def next_delay(
    attempts_done: int,
    schedule: Sequence[float],
    *,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """Seconds until the next try after ``attempts_done`` failed attempts, or None
    when the schedule is used up (the delivery is dead). ±20% jitter; a server's
    ``Retry-After`` replaces the scheduled delay, bounded by the schedule's longest."""
    if attempts_done > len(schedule):
        return None
    delay = schedule[attempts_done - 1]
    if retry_after is not None:
        return min(max(retry_after, 1.0), max(schedule))
    return delay * (1 - JITTER + 2 * JITTER * rng())


class Outcomes:
    """Outcomes recorded by the dispatcher's senders, written in batches every
    FLUSH_INTERVAL; they leave memory only once stored."""

    def __init__(
        self, storage: Storage, settings: Settings, worker_id: str, metrics: Metrics | None
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.worker_id = worker_id
        self.metrics = metrics
        self._outcomes: list[DeliveryOutcome] = []
        self._outcomes_ready = asyncio.Event()

    def of(self, delivery: Delivery, attempt: Attempt) -> DeliveryOutcome:
        if self.metrics is not None:
            self.metrics.observe_attempt(attempt)
        common = {
            "delivery_id": delivery.id,
            "subscription_id": delivery.subscription_id,
            "status_code": attempt.status,
            "error": storable(attempt.error),
            "response_body": storable(attempt.body),
            "latency_ms": attempt.latency_ms,
            "sent_at": attempt.sent_at,
            "claimed_until": delivery.claimed_until,
        }
        if attempt.ok:
            return DeliveryOutcome(status="delivered", succeeded=True, **common)  # type: ignore[arg-type]
        delay = next_delay(
            delivery.attempts + 1, self.settings.retry_schedule, retry_after=attempt.retry_after
        )
        if delay is None:
            return DeliveryOutcome(status="dead", succeeded=False, **common)  # type: ignore[arg-type]
        return DeliveryOutcome(
            status="failed",
            succeeded=False,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
            **common,  # type: ignore[arg-type]
        )

    def record(self, outcome: DeliveryOutcome) -> None:
        self._outcomes.append(outcome)
        self._outcomes_ready.set()

    async def run(self) -> None:
        while True:
            await self._outcomes_ready.wait()
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush()

    async def flush(self, *, tries: int | None = None) -> None:
        """Write recorded outcomes; they leave memory only once stored. ``tries``
        bounds the attempts (at shutdown); what is left unwritten is retried by
        whoever claims those deliveries after their lease."""
        while self._outcomes and tries != 0:
            batch = self._outcomes[:]
            self._outcomes_ready.clear()
            write = asyncio.ensure_future(
                self.storage.complete_deliveries(
                    batch,
                    worker=self.worker_id,
                    disable_after=timedelta(seconds=self.settings.disable_after),
                )
            )
            try:
                disabled = await asyncio.shield(write)
            except asyncio.CancelledError:
                # A write already sent may still commit: wait for it, so the same
                # outcomes are not recorded twice by the final flush at shutdown.
                with contextlib.suppress(Exception):
                    await write
                    del self._outcomes[: len(batch)]
                raise
            except Exception as exc:
                if isinstance(exc, StorageError):
                    logger.warning("recording outcomes failed; retrying", extra={"error": str(exc)})
                else:
                    logger.exception("recording outcomes failed unexpectedly; retrying")
                tries = None if tries is None else tries - 1
                await asyncio.sleep(1.0)
                continue
            del self._outcomes[: len(batch)]
            if self.metrics is not None:
                self.metrics.count_outcomes(batch)
            for subscription_id in disabled:
                logger.warning(
                    "subscription disabled after failing too long",
                    extra={"subscription": subscription_id},
                )


def storable(text: str | None) -> str | None:
    """Partner text (a response body, an error naming what it sent) as database text
    can hold it: NUL as U+FFFD. PostgreSQL refuses NUL (the whole outcome batch was
    refused, and retried forever); SQLite's JSON functions cut the text there."""
    return text if text is None or "\x00" not in text else text.replace("\x00", "\ufffd")


def gone(delivery: Delivery, reason: str) -> DeliveryOutcome:
    return DeliveryOutcome(
        delivery_id=delivery.id,
        subscription_id=delivery.subscription_id,
        status="dead",
        succeeded=False,
        error=reason,
        claimed_until=delivery.claimed_until,
    )
