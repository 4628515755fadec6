"""Deliveries on PostgreSQL: the fan-out from events, claims (SKIP LOCKED), outcomes, recovery."""

from __future__ import annotations

import contextlib
from collections.abc import (
    Mapping,
    Sequence,
)
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from ..errors import (
    DeliveryNotFound,
    StorageError,
)
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
    utcnow,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]


from ._base import _ABOVE_ALL_IDS, PostgresBase, Q, wrap_exceptions

#: After this many deliveries made by fan-outs since the last time, the deliveries'
#: statistics are refreshed (``ANALYZE deliveries``, a sample: tens of ms). A fan-out of
#: thousands into a table the planner last saw near empty made the claim's plan a nested
#: loop over every due delivery (1.4 s a claim with 10,000 waiting, 26 ms after an
#: ANALYZE), until autovacuum came (a minute later, or never where it is off).
ANALYZE_AFTER = 5_000
#: A fan-out step is taken again at most this many times over when a subscription it
#: read was deleted before it committed.
FAN_OUT_TRIES = 5


class DeliveriesMixin(PostgresBase):
    #: Deliveries fanned out by this process since its last ANALYZE of them.
    _fanned_out = 0
    #: A step holds no lock that others wait for (claims pass over rows being
    #: inserted), so it may be large: a step is a commit, and 100,000 pairs took
    #: 1.7 s in one step, 2.1 s in ten (bench/profiles.md).
    fan_out_step = 100_000

    async def create_deliveries(
        self, event_seq: int, subscription_ids: Sequence[str], *, now: datetime | None = None
    ) -> int:
        stamp = now or utcnow()
        async with self._transaction() as conn:
            created = await conn.fetchval(
                Q["insert_deliveries"], event_seq, list(subscription_ids), stamp
            )
        return int(created)

    async def fan_out(
        self,
        pairs: Sequence[tuple[int, str]],
        *,
        cursor: str,
        up_to: int,
        now: datetime | None = None,
    ) -> int:
        if not pairs:  # nothing to create: one statement, atomic on its own
            with wrap_exceptions():
                async with self._acquire() as conn:
                    try:
                        await conn.execute(Q["move_cursor"], cursor, up_to)
                    except Exception as exc:
                        await self._lost(exc)  # a dead connection: replace the pool's
                        raise
            return 0
        seqs = [seq for seq, _ in pairs]
        subscription_ids = [sid for _, sid in pairs]
        async with self._transaction() as conn:
            created = await conn.fetchval(Q["fan_out"], seqs, subscription_ids, now or utcnow())
            await conn.execute(Q["move_cursor"], cursor, up_to)
        await self._made(int(created))
        return int(created)

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
        stamp = now or utcnow()
        for attempt in range(FAN_OUT_TRIES):
            try:
                async with self._transaction() as conn:
                    # Its sorts (the pairs in one order, so concurrent fan-outs cannot
                    # deadlock) in memory: with the default 4 MB they spilled to disk.
                    await conn.execute(Q["pg_fan_out_memory"])
                    row = await conn.fetchrow(
                        Q["fan_out_events"], kind, after, up_to, after_subscription, limit, stamp
                    )
                    assert row is not None
                    done = row["looked_at"] < limit
                    if done:
                        await conn.execute(Q["move_cursor"], cursor, up_to)
                break
            except StorageError as exc:
                # A subscription deleted while the step ran (its snapshot still had
                # it): the foreign key refuses its rows, and the step is taken again
                # without it.
                deleted = isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError)
                if not deleted or attempt == FAN_OUT_TRIES - 1:
                    raise
        assert row is not None
        await self._made(int(row["created"]))
        return FanOutStep(int(row["created"]), row["last_subscription"], done)

    async def _made(self, created: int) -> None:
        """Count deliveries made by fan-outs; refresh their statistics every
        ANALYZE_AFTER."""
        self._fanned_out += created
        if self._fanned_out >= ANALYZE_AFTER:
            self._fanned_out = 0
            # Statistics only: the deliveries are made whether or not it succeeds.
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                async with self._acquire() as analyzing:
                    await analyzing.execute("ANALYZE deliveries")

    async def get_cursor(self, name: str) -> int:
        row = await self._fetch_one(Q["get_cursor"], name)
        return int(row[0]) if row else 0

    async def get_events(self, seqs: Sequence[int]) -> dict[int, Event]:
        rows = await self._fetch(Q["get_events"], list(seqs))
        return {r["seq"]: self._event(r) for r in rows}

    async def get_event_ids(self, seqs: Sequence[int]) -> dict[int, str]:
        rows = await self._fetch(Q["get_event_ids"], list(seqs))
        return {r["seq"]: r["id"] for r in rows}

    async def get_delivery(self, delivery_id: int) -> Delivery:
        row = await self._fetch_one(Q["get_delivery"], delivery_id)
        if row is None:
            raise DeliveryNotFound(delivery_id)
        return self._record(Delivery, row)

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
        below = _ABOVE_ALL_IDS if before_id is None else before_id
        if event_type is not None or since is not None or until is not None:
            rows = await self._fetch(
                Q["list_deliveries.filtered"],
                subscription_id,
                below,
                limit,
                status,
                since,
                until,
                event_type,
            )
        elif status is None:
            rows = await self._fetch(Q["list_deliveries"], subscription_id, below, limit)
        else:
            rows = await self._fetch(
                Q["list_deliveries_with_status"], subscription_id, below, limit, status
            )
        return [self._record(Delivery, r) for r in rows]

    async def list_failing_subscriptions(self, *, limit: int = 20) -> list[Subscription]:
        rows = await self._fetch(Q["list_failing_subscriptions"], limit)
        return [self._subscription(r) for r in rows]

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
        # In id order, so two batches sharing rows lock them in the same order.
        outcomes = sorted(outcomes, key=lambda o: o.delivery_id)
        columns = (
            [o.delivery_id for o in outcomes],
            [o.status for o in outcomes],
            [o.next_attempt_at for o in outcomes],
            [o.status_code for o in outcomes],
            [o.error for o in outcomes],
            [o.response_body for o in outcomes],
            [o.latency_ms for o in outcomes],
            [o.succeeded for o in outcomes],
        )
        sent = [o.sent_at for o in outcomes]
        claims = [o.claimed_until for o in outcomes]
        cutoff = stamp - disable_after
        async with self._transaction() as conn:
            touched = await conn.fetch(
                Q["complete_deliveries"], *columns, stamp, sent, worker, claims
            )
            candidates = [
                r["id"]
                for r in touched
                if r["kind"] == "webhook"
                and r["status"] == "active"
                and r["failing_since"] is not None
                and r["failing_since"] <= cutoff
            ]
            if not candidates:
                return []
            rows = await conn.fetch(Q["disable_failing_subscriptions"], candidates, stamp, cutoff)
        return sorted(r["id"] for r in rows)

    async def retry_delivery(self, delivery_id: int, *, now: datetime | None = None) -> Delivery:
        async with self._transaction() as conn:
            row = await conn.fetchrow(Q["retry_delivery"], delivery_id, now or utcnow())
        if row is None:
            raise DeliveryNotFound(delivery_id)
        return self._record(Delivery, row)

    async def recover_deliveries(
        self, subscription_id: str, *, since: datetime, now: datetime | None = None
    ) -> int:
        async with self._transaction() as conn:
            count = await conn.fetchval(
                Q["recover_deliveries"], subscription_id, since, now or utcnow()
            )
        return int(count)

    async def delivery_stats(self, *, now: datetime | None = None) -> DeliveryStats:
        row = await self._fetch_one(Q["delivery_stats"], now or utcnow())
        assert row is not None
        return self._record(DeliveryStats, row)

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
        rooms = dict(owner_rooms or {})
        rows: list[asyncpg.Record] = []
        async with self._transaction() as conn:
            for each in [kind] if kind else SUBSCRIPTION_KINDS:
                if len(rows) >= limit:
                    break
                rows += await conn.fetch(
                    Q["claim_deliveries"],
                    stamp + lease,
                    worker,
                    stamp,
                    limit - len(rows),
                    limit if per_owner is None else per_owner,
                    list(rooms),
                    list(rooms.values()),
                    each,
                    claim_scan(limit),
                )
        return sorted(
            (self._record(Delivery, r) for r in rows),
            key=lambda d: (d.attempts > 0, d.next_attempt_at, d.id),
        )

    async def release_delivery(self, delivery_id: int, *, worker: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["release_delivery"], delivery_id, worker)

    async def defer_deliveries(
        self, delivery_ids: Sequence[int], *, worker: str, until: datetime
    ) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["defer_deliveries"], list(delivery_ids), worker, until)
