"""Deliveries on SQLite: the fan-out from events, claims, outcomes, recovery."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..errors import (
    DeliveryNotFound,
)
from ..jsoncodec import dumps_text
from ..records import (
    SUBSCRIPTION_KINDS,
    Delivery,
    DeliveryOutcome,
    DeliveryStats,
    DeliveryStatus,
    Event,
    EventType,
    FanOutStep,
    Subscription,
    SubscriptionKind,
    claim_scan,
    format_time,
    utcnow,
)
from ._base import Q, SQLiteBase
from ._bulk import distinct_rounds, fetch_all
from ._rows import (
    outcome_values,
    text_time,
    time_text,
    to_delivery,
    to_event,
    to_subscription,
)

_FAN_OUT_SUBSCRIPTIONS = Q["fan_out_events.subscriptions"]
_FAN_OUT_LOOKED_AT = Q["fan_out_events.looked_at"].replace(
    "{subscriptions}", _FAN_OUT_SUBSCRIPTIONS
)
_FAN_OUT_EVENTS = Q["fan_out_events"].replace("{subscriptions}", _FAN_OUT_SUBSCRIPTIONS)

#: Above every delivery id: the "no cursor" upper bound.
_ABOVE_ALL_IDS = 2**63 - 1


def attempt_values(outcome: DeliveryOutcome, subscription_id: str) -> list[Any]:
    """One element of ``complete_deliveries.record_attempts``' JSON array."""
    return [
        outcome.delivery_id,
        subscription_id,
        outcome.status,
        outcome.succeeded,
        outcome.status_code,
        outcome.latency_ms,
        outcome.error,
        outcome.response_body,
        time_text(outcome.sent_at),
    ]


class DeliveriesMixin(SQLiteBase):
    #: A step holds the one writer, and a claim (a write) waits for it: 10,000 pairs
    #: take about 80 ms.
    fan_out_step = 10_000

    async def create_deliveries(
        self, event_seq: int, subscription_ids: Sequence[str], *, now: datetime | None = None
    ) -> int:
        stamp = format_time(now or utcnow())
        async with self._transaction() as conn:
            before = conn.total_changes
            ids = json.dumps(list(subscription_ids))
            await conn.execute(Q["insert_deliveries"], (event_seq, ids, stamp))
            return conn.total_changes - before

    async def fan_out(
        self,
        pairs: Sequence[tuple[int, str]],
        *,
        cursor: str,
        up_to: int,
        now: datetime | None = None,
    ) -> int:
        stamp = format_time(now or utcnow())

        def fan_out(conn: sqlite3.Connection) -> int:  # one hop (see _in_writer)
            before = conn.total_changes
            if pairs:
                conn.execute(Q["fan_out"], (dumps_text(pairs), stamp))
            created = conn.total_changes - before
            conn.execute(Q["move_cursor"], (cursor, up_to))
            return created

        return await self._in_writer(fan_out)

    async def fan_out_events(
        self,
        *,
        kind: SubscriptionKind,
        cursor: str,
        after: int,
        up_to: int,
        after_subscription: str = "",
        limit: int,
        now: datetime | None = None,
    ) -> FanOutStep:
        params = {
            "kind": kind,
            "after": after,
            "up_to": up_to,
            "after_subscription": after_subscription,
            "limit": limit,
            "now": format_time(now or utcnow()),
        }

        def step(conn: sqlite3.Connection) -> FanOutStep:  # one hop (see _in_writer)
            looked_at, last = conn.execute(_FAN_OUT_LOOKED_AT, params).fetchone()
            before = conn.total_changes
            if looked_at:
                conn.execute(_FAN_OUT_EVENTS, params)
            created = conn.total_changes - before
            done = looked_at < limit
            if done:
                conn.execute(Q["move_cursor"], (cursor, up_to))
            return FanOutStep(created, last, done)

        return await self._in_writer(step)

    async def get_cursor(self, name: str) -> int:
        async with self._read(Q["get_cursor"], (name,)) as rows:
            return int(rows[0][0]) if rows else 0

    async def get_events(self, seqs: Sequence[int]) -> dict[int, Event]:
        rows = await self._read_rows(Q["get_events"], (json.dumps(list(seqs)),))
        return {r["seq"]: to_event(r) for r in rows}

    async def get_event_ids(self, seqs: Sequence[int]) -> dict[int, str]:
        rows = await self._read_rows(Q["get_event_ids"], (json.dumps(list(seqs)),))
        return {r["seq"]: r["id"] for r in rows}

    async def get_delivery(self, delivery_id: int) -> Delivery:
        async with self._read(Q["get_delivery"], (delivery_id,)) as rows:
            if not rows:
                raise DeliveryNotFound(delivery_id)
            return to_delivery(rows[0])

    async def list_deliveries(
        self,
        subscription_id: str,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        before_id: int | None = None,
        event_type: EventType | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Delivery]:
        params: dict[str, Any] = {
            "subscription_id": subscription_id,
            "status": status,
            "before_id": _ABOVE_ALL_IDS if before_id is None else before_id,
            "limit": limit,
        }
        if event_type is not None or since is not None or until is not None:
            query = Q["list_deliveries.filtered"]
            params.update(event_type=event_type, since=time_text(since), until=time_text(until))
        elif status is None:
            query = Q["list_deliveries"]
        else:
            query = Q["list_deliveries_with_status"]
        async with self._read(query, params) as rows:
            return [to_delivery(r) for r in rows]

    async def list_failing_subscriptions(self, *, limit: int = 20) -> list[Subscription]:
        async with self._read(Q["list_failing_subscriptions"], (limit,)) as rows:
            return [to_subscription(r) for r in rows]

    async def complete_deliveries(
        self,
        outcomes: Sequence[DeliveryOutcome],
        *,
        worker: str,
        disable_after: timedelta,
        now: datetime | None = None,
    ) -> list[str]:
        if not outcomes:
            return []
        stamp = now or utcnow()
        at = format_time(stamp)
        ids = json.dumps([o.delivery_id for o in outcomes])

        # One hop to the writer thread for the whole batch (see _in_writer), and
        # a few steps there whatever its size (see _bulk).
        def complete(conn: sqlite3.Connection) -> list[str]:
            (found,) = conn.execute(Q["complete_deliveries.owners"], (ids,)).fetchone()
            owners = {int(key): owner for key, owner in json.loads(found).items()}
            live = [o for o in outcomes if o.delivery_id in owners]
            for part in distinct_rounds(live, key=lambda o: o.delivery_id):
                values = dumps_text([outcome_values(o) for o in part])
                conn.execute(
                    Q["complete_deliveries"], {"outcomes": values, "now": at, "worker": worker}
                )
            if live:
                attempts = dumps_text([attempt_values(o, owners[o.delivery_id]) for o in live])
                conn.execute(
                    Q["complete_deliveries.record_attempts"], {"attempts": attempts, "now": at}
                )
            succeeded = {owners[o.delivery_id] for o in live if o.succeeded}
            failed = {owners[o.delivery_id] for o in live} - succeeded
            if succeeded:
                conn.execute(
                    Q["complete_deliveries.subscriptions_succeeded"],
                    (at, json.dumps(sorted(succeeded))),
                )
            if not failed:
                return []
            conn.execute(
                Q["complete_deliveries.subscriptions_failed"], (at, json.dumps(sorted(failed)))
            )
            params = {
                "ids": json.dumps(sorted(failed)),
                "now": at,
                "cutoff": format_time(stamp - disable_after),
            }
            rows = conn.execute(Q["disable_failing_subscriptions"], params)
            return sorted(r["id"] for r in rows)

        return await self._in_writer(complete)

    async def retry_delivery(self, delivery_id: int, *, now: datetime | None = None) -> Delivery:
        async with self._transaction() as conn:
            params = (format_time(now or utcnow()), delivery_id)
            row = await self._one(conn, Q["retry_delivery"], params)
        if row is None:
            raise DeliveryNotFound(delivery_id)
        return to_delivery(row)

    async def recover_deliveries(
        self, subscription_id: str, *, since: datetime, now: datetime | None = None
    ) -> int:
        params = {
            "subscription_id": subscription_id,
            "since": format_time(since),
            "now": format_time(now or utcnow()),
        }
        async with self._transaction() as conn:
            async with conn.execute(Q["recover_deliveries"], params) as cur:
                return cur.rowcount

    async def delivery_stats(self, *, now: datetime | None = None) -> DeliveryStats:
        async with self._read(Q["delivery_stats"], (format_time(now or utcnow()),)) as rows:
            row = rows[0]
            return DeliveryStats(row["pending"], row["due"], text_time(row["oldest_pending_at"]))

    async def claim_deliveries(
        self,
        *,
        worker: str,
        limit: int,
        lease: timedelta,
        now: datetime | None = None,
        kind: SubscriptionKind | None = None,
        per_owner: int | None = None,
        owner_rooms: Mapping[str, int] | None = None,
    ) -> list[Delivery]:
        stamp = now or utcnow()
        params = {
            "until": format_time(stamp + lease),
            "worker": worker,
            "now": format_time(stamp),
            "per_owner": limit if per_owner is None else per_owner,
            "rooms": json.dumps(dict(owner_rooms or {})),
            "scan": claim_scan(limit),
        }

        # One hop to the writer thread (see _in_writer), rows converted there too,
        # and three steps there, not one per row (see _bulk).
        def claim(conn: sqlite3.Connection) -> list[Delivery]:
            claimed: list[Delivery] = []
            for each in [kind] if kind else SUBSCRIPTION_KINDS:
                left = limit - len(claimed)
                if left <= 0:
                    break
                due = {**params, "kind": each, "limit": left}
                (ids,) = conn.execute(Q["claim_deliveries.due"], due).fetchone()
                if ids == "[]":
                    continue
                conn.execute(Q["claim_deliveries"], {**params, "ids": ids})
                claimed += [
                    to_delivery(r) for r in fetch_all(conn, Q["claim_deliveries.claimed"], (ids,))
                ]
            return claimed

        claimed = await self._in_writer(claim)
        return sorted(claimed, key=lambda d: (d.attempts > 0, d.next_attempt_at, d.id))

    async def release_delivery(self, delivery_id: int, *, worker: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["release_delivery"], (delivery_id, worker))

    async def defer_deliveries(
        self, delivery_ids: Sequence[int], *, worker: str, until: datetime
    ) -> None:
        params = (format_time(until), json.dumps(list(delivery_ids)), worker)
        async with self._transaction() as conn:
            await conn.execute(Q["defer_deliveries"], params)
