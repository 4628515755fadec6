"""Webhook and WebSub subscriptions on SQLite."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..errors import (
    SubscriptionNotFound,
)
from ..records import (
    Subscription,
    SubscriptionKind,
    SubscriptionStatus,
    format_time,
    owner_key,
    utcnow,
)
from ._base import Q, SQLiteBase
from ._rows import (
    subscription_values,
    time_text,
    to_subscription,
)


class SubscriptionsMixin(SQLiteBase):
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
        params = {
            "id": id,
            "kind": kind,
            "owner": owner,
            "url": url,
            "topics": json.dumps(list(topics)),
            "events": json.dumps(list(events)),
            "secret": secret,
            "status": status,
            "description": description,
            "lease_expires_at": time_text(lease_expires_at),
            "topic_url": topic_url,
            "now": format_time(now or utcnow()),
            "owner_key": owner_key(kind, owner, url),
        }
        async with self._transaction() as conn:
            row = await self._one(conn, Q["insert_subscription"], params)
        assert row is not None
        return to_subscription(row)

    async def get_subscription(self, subscription_id: str) -> Subscription:
        async with self._read(Q["get_subscription"], (subscription_id,)) as rows:
            if not rows:
                raise SubscriptionNotFound(subscription_id)
            return to_subscription(rows[0])

    async def find_websub_subscription(self, callback: str, topic_url: str) -> Subscription | None:
        async with self._read(Q["find_websub_subscription"], (callback, topic_url)) as rows:
            return to_subscription(rows[0]) if rows else None

    async def get_subscriptions(self, subscription_ids: Sequence[str]) -> dict[str, Subscription]:
        rows = await self._read_rows(Q["get_subscriptions"], (json.dumps(list(subscription_ids)),))
        return {r["id"]: to_subscription(r) for r in rows}

    async def list_subscriptions(
        self,
        *,
        owner: str | None = None,
        kind: SubscriptionKind | None = None,
        limit: int = 100,
        after_id: str | None = None,
    ) -> list[Subscription]:
        params = {"owner": owner, "kind": kind, "after_id": after_id or "", "limit": limit}
        query = Q["list_subscriptions"] if owner is None else Q["list_owner_subscriptions"]
        async with self._read(query, params) as rows:
            return [to_subscription(r) for r in rows]

    async def list_active_subscriptions(
        self, *, now: datetime | None = None, kind: SubscriptionKind | None = None
    ) -> list[Subscription]:
        stamp = format_time(now or utcnow())
        rows = await self._read_rows(Q["list_active_subscriptions"], (stamp, kind))
        return sorted((to_subscription(r) for r in rows), key=lambda s: s.id)

    async def update_subscription(
        self, subscription_id: str, changes: Mapping[str, Any], *, now: datetime | None = None
    ) -> Subscription:
        values = subscription_values(changes)
        # Column names come from SUBSCRIPTION_MUTABLE (checked above), values are bound.
        assignments = "".join(f"{column} = :{column}, " for column in values)
        sql = Q["update_subscription"].format(assignments=assignments)
        params = {**values, "id": subscription_id, "now": format_time(now or utcnow())}
        async with self._transaction() as conn:
            row = await self._one(conn, sql, params)
            if row is not None and "url" in values:
                key = owner_key(row["kind"], row["owner"], row["url"])
                row = await self._one(conn, Q["set_host_owner_key"], (key, subscription_id)) or row
        if row is None:
            raise SubscriptionNotFound(subscription_id)
        return to_subscription(row)

    async def count_websub_subscriptions(
        self, *, host: str | None = None, topic_url: str | None = None
    ) -> int:
        if host is not None:
            sql = Q["count_websub_subscriptions_of_owner"]
            params = {"owner_key": owner_key("websub", None, f"//{host}"), "topic_url": topic_url}
        elif topic_url is not None:
            sql, params = Q["count_websub_subscriptions_of_topic"], {"topic_url": topic_url}
        else:
            sql, params = Q["count_websub_subscriptions"], {}
        async with self._read(sql, params) as rows:
            return int(rows[0][0])

    async def delete_subscription(self, subscription_id: str) -> None:
        async with self._transaction() as conn:
            row = await self._one(conn, Q["delete_subscription"], (subscription_id,))
        if row is None:
            raise SubscriptionNotFound(subscription_id)
