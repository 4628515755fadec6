"""Recorded delivery attempts and verifications of intent on postgres: what the
subscription status pages show. ``complete_deliveries`` (deliveries.py) writes the
attempts, in the one statement that records the outcomes."""

from __future__ import annotations

from datetime import UTC, datetime

from ..records import AttemptCount, DeliveryAttempt, Verification
from ._base import PostgresBase, Q

#: Before every attempt: ``since=None``.
_EVER = datetime.min.replace(tzinfo=UTC)


class AttemptsMixin(PostgresBase):
    async def list_attempts(
        self,
        subscription_id: str,
        *,
        since: datetime | None = None,
        limit: int = 20,
        delivery_id: int | None = None,
    ) -> list[DeliveryAttempt]:
        start = _EVER if since is None else since
        if delivery_id is None:
            rows = await self._fetch(Q["list_attempts"], subscription_id, start, limit)
        else:
            rows = await self._fetch(
                Q["list_attempts.of_delivery"], subscription_id, start, limit, delivery_id
            )
        return [self._record(DeliveryAttempt, r) for r in rows]

    async def get_attempt(self, attempt_id: int) -> DeliveryAttempt | None:
        row = await self._fetch_one(Q["get_attempt"], attempt_id)
        return None if row is None else self._record(DeliveryAttempt, row)

    async def count_attempts(
        self, *, since: datetime, bucket_seconds: int = 60
    ) -> list[AttemptCount]:
        if bucket_seconds < 1:
            raise ValueError(f"bucket_seconds must be at least 1, not {bucket_seconds}")
        rows = await self._fetch(Q["count_attempts"], since, bucket_seconds)
        return [self._record(AttemptCount, r) for r in rows]

    async def next_attempt_at(self, subscription_id: str) -> datetime | None:
        row = await self._fetch_one(Q["next_attempt_at"], subscription_id)
        value: datetime | None = None if row is None else row[0]
        return None if value is None else value.astimezone(UTC)

    async def prune_attempts(self, *, before: datetime, limit: int = 10_000) -> int:
        """Also deletes up to ``limit`` verifications older than ``before`` of pairs
        that are no subscription (not counted): the hub's record of refusals and
        unsubscriptions would grow without bound otherwise."""
        async with self._transaction() as conn:
            deleted = await conn.fetchval(Q["prune_attempts"], before, limit)
            await conn.execute(Q["prune_attempts.verifications"], before, limit)
        return int(deleted)

    async def record_verification(self, verification: Verification) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                Q["record_verification"],
                verification.callback,
                verification.topic_url,
                verification.mode,
                verification.verified_at,
                verification.result,
                verification.detail,
            )

    async def get_verification(self, callback: str, topic_url: str) -> Verification | None:
        row = await self._fetch_one(Q["get_verification"], callback, topic_url)
        return None if row is None else self._record(Verification, row)
