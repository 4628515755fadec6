"""Recorded delivery attempts and verifications of intent on postgres: what the
subscription status pages show."""

from __future__ import annotations

from datetime import datetime

from ..records import DeliveryAttempt, Verification
from ._base import PostgresBase


class AttemptsMixin(PostgresBase):
    async def list_attempts(
        self, subscription_id: str, *, since: datetime | None = None, limit: int = 20
    ) -> list[DeliveryAttempt]:
        raise NotImplementedError

    async def next_attempt_at(self, subscription_id: str) -> datetime | None:
        raise NotImplementedError

    async def prune_attempts(self, *, before: datetime, limit: int = 10_000) -> int:
        raise NotImplementedError

    async def record_verification(self, verification: Verification) -> None:
        raise NotImplementedError

    async def get_verification(self, callback: str, topic_url: str) -> Verification | None:
        raise NotImplementedError
