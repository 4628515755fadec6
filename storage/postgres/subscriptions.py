"""Webhook and WebSub subscriptions on PostgreSQL."""

from __future__ import annotations

from collections.abc import (
    Mapping,
    Sequence,
)
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from .. import _changes
from ..errors import (
    SubscriptionNotFound,
)
from ..records import (
    Subscription,
    SubscriptionKind,
    SubscriptionStatus,
    owner_key,
    utcnow,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]


from ._base import PostgresBase, Q


class SubscriptionsMixin(PostgresBase):
    async def create_subscription(
        self,
        *,
        id: str,
        kind: SubscriptionKind,
        url: str,
        topics: Sequence[str],
        events: Sequence[str],
        secret: str | None,
        owner: str | None = None,
        status: SubscriptionStatus = "active",
        description: str = "",
        lease_expires_at: datetime | None = None,
        topic_url: str | None = None,
        now: datetime | None = None,
    ) -> Subscription:
        stamp = now or utcnow()
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                Q["insert_subscription"],
                id,
                kind,
                owner,
                url,
                list(topics),
                list(events),
                secret,
                status,
                description,
                lease_expires_at,
                topic_url,
                stamp,
                owner_key(kind, owner, url),
            )
        assert row is not None
        return self._subscription(row)

    async def get_subscription(self, subscription_id: str) -> Subscription:
        row = await self._fetch_one(Q["get_subscription"], subscription_id)
        if row is None:
            raise SubscriptionNotFound(subscription_id)
        return self._subscription(row)

    async def find_websub_subscription(self, callback: str, topic_url: str) -> Subscription | None:
        row = await self._fetch_one(Q["find_websub_subscription"], callback, topic_url)
        return self._subscription(row) if row else None

    async def get_subscriptions(self, subscription_ids: Sequence[str]) -> dict[str, Subscription]:
        rows = await self._fetch(Q["get_subscriptions"], list(subscription_ids))
        return {r["id"]: self._subscription(r) for r in rows}

    async def list_subscriptions(
        self,
        *,
        owner: str | None = None,
        kind: SubscriptionKind | None = None,
        limit: int = 100,
        after_id: str | None = None,
    ) -> list[Subscription]:
        if owner is None:
            rows = await self._fetch(Q["list_subscriptions"], after_id or "", kind, limit)
        else:
            rows = await self._fetch(
                Q["list_owner_subscriptions"], after_id or "", kind, limit, owner
            )
        return [self._subscription(r) for r in rows]

    async def list_active_subscriptions(
        self, *, now: datetime | None = None, kind: SubscriptionKind | None = None
    ) -> list[Subscription]:
        rows = await self._fetch(Q["list_active_subscriptions"], now or utcnow(), kind)
        return [self._subscription(r) for r in rows]

    async def update_subscription(
        self, subscription_id: str, changes: Mapping[str, Any], *, now: datetime | None = None
    ) -> Subscription:
        values = _changes.subscription_changes(changes)
        # Column names come from SUBSCRIPTION_MUTABLE (checked above), values are bound.
        assignments = "".join(f"{column} = ${n}, " for n, column in enumerate(values, start=3))
        sql = Q["update_subscription"].format(assignments=assignments)
        async with self._transaction() as conn:
            row = await conn.fetchrow(sql, subscription_id, now or utcnow(), *values.values())
            if row is not None and "url" in values:
                key = owner_key(row["kind"], row["owner"], row["url"])
                row = await conn.fetchrow(Q["set_host_owner_key"], key, subscription_id) or row
        if row is None:
            raise SubscriptionNotFound(subscription_id)
        return self._subscription(row)

    async def count_websub_subscriptions(
        self, *, host: str | None = None, topic_url: str | None = None
    ) -> int:
        if host is not None:
            key = owner_key("websub", None, f"//{host}")
            row = await self._fetch_one(Q["count_websub_subscriptions_of_owner"], key, topic_url)
        elif topic_url is not None:
            row = await self._fetch_one(Q["count_websub_subscriptions_of_topic"], topic_url)
        else:
            row = await self._fetch_one(Q["count_websub_subscriptions"])
        return int(row[0]) if row else 0

    async def delete_subscription(self, subscription_id: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["delete_subscription.lock_deliveries"], subscription_id)
            deleted = await conn.fetchval(Q["delete_subscription"], subscription_id)
        if deleted is None:
            raise SubscriptionNotFound(subscription_id)
