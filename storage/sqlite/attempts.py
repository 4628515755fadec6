"""Recorded delivery attempts and verifications of intent on sqlite: what the
subscription status pages show. ``complete_deliveries`` (deliveries.py) writes the
attempts, in the transaction that records the outcomes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..records import AttemptCount, DeliveryAttempt, Verification, format_time, parse_time
from ._base import Q, SQLiteBase
from ._rows import text_time


def _attempt(row: Any) -> DeliveryAttempt:
    return DeliveryAttempt(
        delivery_id=row["delivery_id"],
        subscription_id=row["subscription_id"],
        attempted_at=parse_time(row["attempted_at"]),
        outcome=row["outcome"],
        succeeded=bool(row["succeeded"]),
        status_code=row["status_code"],
        latency_ms=row["latency_ms"],
        error=row["error"],
        event_id=row["event_id"],
        id=row["id"],
        response_body=row["response_body"],
        sent_at=text_time(row["sent_at"]),
        event_type=row["event_type"],
    )


class AttemptsMixin(SQLiteBase):
    async def list_attempts(
        self,
        subscription_id: str,
        *,
        since: datetime | None = None,
        limit: int = 20,
        delivery_id: int | None = None,
    ) -> list[DeliveryAttempt]:
        params = {
            "subscription_id": subscription_id,
            # Every stored time sorts after the empty text.
            "since": "" if since is None else format_time(since),
            "limit": limit,
        }
        if delivery_id is None:
            query = Q["list_attempts"]
        else:
            query = Q["list_attempts.of_delivery"]
            params["delivery_id"] = delivery_id
        return [_attempt(r) for r in await self._read_rows(query, params)]

    async def get_attempt(self, attempt_id: int) -> DeliveryAttempt | None:
        async with self._read(Q["get_attempt"], (attempt_id,)) as rows:
            return _attempt(rows[0]) if rows else None

    async def count_attempts(
        self, *, since: datetime, bucket_seconds: int = 60
    ) -> list[AttemptCount]:
        if bucket_seconds < 1:
            raise ValueError(f"bucket_seconds must be at least 1, not {bucket_seconds}")
        params = {"since": format_time(since), "bucket": bucket_seconds}
        return [
            AttemptCount(
                bucket=datetime.fromtimestamp(r["bucket"], UTC),
                outcome=r["outcome"],
                succeeded=bool(r["succeeded"]),
                count=r["count"],
            )
            for r in await self._read_rows(Q["count_attempts"], params)
        ]

    async def next_attempt_at(self, subscription_id: str) -> datetime | None:
        async with self._read(Q["next_attempt_at"], (subscription_id,)) as rows:
            value = rows[0][0] if rows else None
        return None if value is None else parse_time(value)

    async def prune_attempts(self, *, before: datetime, limit: int = 10_000) -> int:
        """Also deletes up to ``limit`` verifications older than ``before`` of pairs
        that are no subscription (not counted): the hub's record of refusals and
        unsubscriptions would grow without bound otherwise."""
        params = (format_time(before), limit)
        async with self._transaction() as conn:
            async with conn.execute(Q["prune_attempts"], params) as cur:
                deleted = cur.rowcount
            await conn.execute(Q["prune_attempts.verifications"], params)
        return max(deleted, 0)

    async def record_verification(self, verification: Verification) -> None:
        params = {
            "callback": verification.callback,
            "topic_url": verification.topic_url,
            "mode": verification.mode,
            "verified_at": format_time(verification.verified_at),
            "result": verification.result,
            "detail": verification.detail,
        }
        async with self._transaction() as conn:
            await conn.execute(Q["record_verification"], params)

    async def get_verification(self, callback: str, topic_url: str) -> Verification | None:
        async with self._read(Q["get_verification"], (callback, topic_url)) as rows:
            if not rows:
                return None
            row = rows[0]
        return Verification(
            callback=row["callback"],
            topic_url=row["topic_url"],
            mode=row["mode"],
            verified_at=parse_time(row["verified_at"]),
            result=row["result"],
            detail=row["detail"],
        )
