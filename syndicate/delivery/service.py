"""Push delivery: the fan-out (events -> deliveries) and the dispatcher (deliveries -> HTTP).

FanOut        reads the event log past its cursor, creates one delivery per
              matching subscription (idempotent; the cursor lives in the
              database, so several processes may run it).
Dispatcher    claims due deliveries under a lease, sends them with global and
              per-host caps, and writes outcomes back in batches.
Sender        (outbound.py) the one seam for outbound HTTP, ``send(request) -> Attempt``,
              one shared ClientSession behind the egress guard.
DeliveryService   the three together, started and stopped as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from storage import Storage, StorageError
from storage.records import (
    SUBSCRIPTION_KINDS,
    Delivery,
    DeliveryOutcome,
    Event,
    Subscription,
    SubscriptionKind,
    owner_key,
    utcnow,
)
from syndicate.core.settings import Settings
from syndicate.delivery import webhooks
from syndicate.delivery.egress import Resolver
from syndicate.delivery.liveness import Liveness
from syndicate.delivery.sender import Attempt, OutboundRequest, Sender
from syndicate.delivery.websub import notification, parse_topic, websub_request

if TYPE_CHECKING:
    from syndicate.delivery.metrics import Metrics

logger = logging.getLogger(__name__)

CLAIM_BATCH = 500
#: Deliveries a process holds (queued or being sent): this many times ``max_in_flight``.
#: Claims are made ahead of sending, so that the next batch lands before the senders
#: run dry: a claim waits for the database, which is slowest when the sending is busiest.
CLAIM_AHEAD = 4  # <= HOST_BACKLOG_FACTOR: see the lease
POLL_INTERVAL = 1.0
FLUSH_INTERVAL = 0.02
JITTER = 0.2
#: An owner may always hold this many times its cap (``max_per_owner``): what the lease
#: allows for an owner that hangs (each of its senders times out in turn).
HOST_BACKLOG_FACTOR = 4
#: A fast owner may hold more: as many as it takes, at its observed pace, this long to
#: be sent. More are handed back for later; an owner that slows down hands back what it
#: holds beyond its new share as soon as an attempt shows it.
HOST_BACKLOG_SECONDS = 0.5
#: Seconds per attempt assumed of a host or owner before any is measured.
INITIAL_LATENCY = 0.05
#: Weight of the newest attempt in an owner's smoothed latency.
LATENCY_WEIGHT = 0.2
#: Bounds on how long a delivery handed back for a busy owner waits to be claimed again.
MIN_HOST_DEFER = 0.01
MAX_HOST_DEFER = 2.0
#: Latencies of idle hosts and owners remembered, the most recent first.
LATENCY_MEMORY = 10_000
#: The fan-out's cursor per kind (the webhooks' keeps the name of the one before).
FANOUT_CURSORS: dict[SubscriptionKind, str] = {
    "webhook": "deliveries",
    "websub": "deliveries:websub",
}
FANOUT_BATCH = 500
FANOUT_CHUNK = 1000
BODY_CACHE_EVENTS = 256


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


def webhook_request(
    delivery: Delivery,
    event: Event,
    subscription: Subscription,
    base_url: str,
    now: datetime,
    *,
    body: bytes | None = None,
) -> OutboundRequest:
    """``body``: the event's encoded body when the caller has it already (it is the
    same for every subscription)."""
    if body is None:
        body = webhooks.event_body(event, base_url)
    return signed_request(subscription, webhooks.message_id(event), body, now)


def signed_request(
    subscription: Subscription, msg_id: str, body: bytes, now: datetime
) -> OutboundRequest:
    """A Standard Webhooks POST of ``body``, signed with every valid secret."""
    timestamp = int(now.timestamp())
    keys = webhooks.signing_secrets(subscription, now)
    return OutboundRequest(
        url=subscription.url,
        body=body,
        headers={
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhooks.signature_header(keys, msg_id, timestamp, body),
        },
    )


class FanOut:
    """Turns new events into deliveries for one kind of subscription. Woken after
    local commits; polls for others'.

    Each kind has a loop and a cursor of its own: thousands of WebSub callbacks (anyone
    may subscribe) take a while to match and write, and a partner's deliveries must
    not wait for them. The rows go in writes of FANOUT_CHUNK, so that a claim (on
    SQLite a write too) is not queued behind thousands of them; the cursor moves with
    the last write, and a crash before it repeats the earlier ones, which create
    nothing twice."""

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
        # committed before any subscription that this read of them does not see.
        head = (await self.storage.feed_state(None)).seq
        if head <= cursor:
            return 0
        subscriptions = await self.storage.list_active_subscriptions(kind=self.kind)
        if not subscriptions:
            # Nobody to deliver to: pass every event so far without reading them
            # (as reading them and matching none would, at a fraction of the cost).
            await self.storage.fan_out([], cursor=self.cursor, up_to=head)
            return 0
        events = await self.storage.list_events(after=cursor, limit=FANOUT_BATCH, with_data=False)
        # Only events up to the head: later ones may be older than a subscription
        # that the list read above does not show yet.
        events = [e for e in events if e.seq <= head]
        if not events:
            return 0
        pairs = [(e.seq, s.id) for e in events for s in subscriptions if webhooks.matches(s, e)]
        writes = [pairs[i : i + FANOUT_CHUNK] for i in range(0, len(pairs), FANOUT_CHUNK)] or [[]]
        for n, write in enumerate(writes, start=1):
            up_to = events[-1].seq if n == len(writes) else cursor
            started = time.monotonic()
            if await self.storage.fan_out(write, cursor=self.cursor, up_to=up_to):
                self.on_created()
            if self.kind == "websub":
                # At most half the time writing: a flood of WebSub subscriptions slows
                # WebSub notifications, not the database that partners' deliveries need.
                await asyncio.sleep(time.monotonic() - started)
        return len(events)

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
            await _nap(self._wake)


async def _nap(wake: asyncio.Event) -> None:
    """Wait until ``wake`` is set or ``POLL_INTERVAL`` passes. Not ``asyncio.wait_for``:
    on Python 3.11 it swallows a cancellation that arrives just as the event is set, and
    a loop waiting that way never stops (shutdown hung on it)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(POLL_INTERVAL):
            await wake.wait()


class _Backlog:
    """Deliveries held in this process for one host or one owner, and how fast they
    drain: what decides how many more it may take, and how long to defer the rest."""

    def __init__(self, key: str) -> None:
        self.key = key
        #: It was left out of a claim, or some of its deliveries deferred, for want of
        #: room: the claim loop is woken once it has worked through half its share.
        self.refill = False
        #: Deliveries queued or being sent.
        self.held = 0
        #: Smoothed seconds per attempt.
        self.latency = INITIAL_LATENCY

    def observe(self, seconds: float) -> None:
        self.latency += LATENCY_WEIGHT * (seconds - self.latency)

    def drain_time(self, cap: int) -> float:
        """Seconds for ``cap`` senders to work through what is held, bounded."""
        return min(MAX_HOST_DEFER, max(MIN_HOST_DEFER, self.held / cap * self.latency))

    def share(self, cap: int, most: int) -> int:
        """How many deliveries it may hold with this cap (``most``: its kind's limit
        in the process)."""
        return _share(cap, most, self.latency)


def _share(cap: int, most: int, latency: float) -> int:
    paced = int(cap * HOST_BACKLOG_SECONDS / max(latency, 1e-4))
    return max(cap * HOST_BACKLOG_FACTOR, min(most, paced))


class _Owner(_Backlog):
    """One owner's deliveries in this process (a partner, or a callback host): at most
    ``max_per_owner`` of its requests are in flight, however many hosts it has, so an
    owner that hangs holds at most that many slots until their timeouts fire."""

    def __init__(self, key: str, kind: SubscriptionKind, cap: int) -> None:
        super().__init__(key)
        self.kind = kind
        self.slots = asyncio.Semaphore(cap)
        #: The hosts whose queues hold (or held) this owner's deliveries.
        self.hosts: set[_Host] = set()


class _Host(_Backlog):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        #: Deliveries waiting for one of this host's senders, in claim order.
        self.queue: deque[_Job] = deque()
        #: Sender tasks working through ``queue``: at most ``max_per_host``.
        self.senders = 0


#: A claimed delivery with what it needs to be sent, queued at its host.
_Job = tuple[Delivery, Event, Subscription, _Owner]


@dataclass
class Dispatcher:
    """Claims due deliveries and sends them; one per process.

    Requests in flight are capped in four layers: per host (its senders), per owner
    (a partner token, or a WebSub callback host), per kind of subscription (each kind
    keeps its share of the global slots, whatever the other's backlog) and global.
    Claims are made per kind and shared out between owners by the database
    (``claim_deliveries``): an owner holding all it may is left out of the claim, and
    first attempts go ahead of retries."""

    storage: Storage
    settings: Settings
    sender: Sender
    metrics: Metrics | None = None
    worker_id: str = field(default_factory=lambda: f"worker-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        settings = self.settings
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        shares = {"webhook": settings.webhook_share, "websub": settings.websub_share}
        other = {"webhook": "websub", "websub": "webhook"}
        #: A kind may use every slot but those kept for the other kind.
        self._kind_slots = {
            kind: asyncio.Semaphore(
                max(1, settings.max_in_flight - int(settings.max_in_flight * shares[other[kind]]))
            )
            for kind in SUBSCRIPTION_KINDS
        }
        self._hosts: dict[str, _Host] = {}
        self._owners: dict[str, _Owner] = {}
        self._latencies: OrderedDict[tuple[str, str], float] = OrderedDict()
        #: The owners' rooms in the last claim (and the room of any other owner).
        self._claim_rooms: tuple[dict[str, int], int] = ({}, 0)
        # Sender tasks: up to max_per_host per host, each sending its host's queued
        # deliveries one after another (a task per delivery cost more than all the
        # dispatcher's other work per delivery).
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: list[DeliveryOutcome] = []
        self._outcomes_ready = asyncio.Event()
        self._held = 0
        self._kind_held = dict.fromkeys(SUBSCRIPTION_KINDS, 0)
        #: Deliveries queued (None) or taken by a sender task.
        self._jobs: dict[int, asyncio.Task[None] | None] = {}
        self._sending: set[int] = set()
        self._unfinished: list[int] = []
        # One event fans out to many subscriptions: encode its body once, not per delivery.
        self._bodies: OrderedDict[int, bytes] = OrderedDict()
        self._websub_bodies: OrderedDict[tuple[int, str], asyncio.Future[OutboundRequest]] = (
            OrderedDict()
        )
        self._limit = settings.max_in_flight * CLAIM_AHEAD
        kinds = SUBSCRIPTION_KINDS
        self._kind_limit = {
            kind: max(1, self._limit - int(self._limit * shares[other[kind]])) for kind in kinds
        }
        self._kind_batch = {
            kind: max(1, min(CLAIM_BATCH, self._kind_limit[kind] * 2 // 3)) for kind in kinds
        }
        # Long enough for a delivery to wait out its host's backlog and time out: a
        # host that hangs times out once (one timeout), hands back all but
        # HOST_BACKLOG_FACTOR rounds of its cap (that many more), and the delivery is
        # sent (one more). A share bounded by HOST_BACKLOG_SECONDS instead takes at
        # most that long by the smoothed latency, which is at least LATENCY_WEIGHT x
        # the timeout after one. Owners shed alike, and hold no more rounds of their
        # cap; the process holds CLAIM_AHEAD rounds of the global slots (no more than
        # HOST_BACKLOG_FACTOR). A crashed process's leases do not wait for this: live
        # processes release them by its heartbeat (see liveness.py).
        timeout = settings.delivery_timeout
        self.lease = timedelta(
            seconds=timeout * (HOST_BACKLOG_FACTOR + 2) + HOST_BACKLOG_SECONDS / LATENCY_WEIGHT
        )

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        flusher = asyncio.create_task(self._flush_loop())
        try:
            await self._claim_loop()
        finally:
            await self._shut_down(flusher)

    async def _shut_down(self, flusher: asyncio.Task[None]) -> None:
        """Stop claiming; let requests already on the wire finish (bounded by the
        delivery timeout), record their outcomes, and hand every other claimed
        delivery back at once instead of leaving it leased."""
        for host in self._hosts.values():
            while host.queue:
                delivery, _, _, owner = host.queue.popleft()
                self._jobs.pop(delivery.id, None)
                self._release(host, owner)
                self._unfinished.append(delivery.id)
        for delivery_id, task in list(self._jobs.items()):
            if task is not None and delivery_id not in self._sending:
                task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.settings.delivery_timeout + 1)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        await self._flush(tries=3)
        if self._unfinished:
            with contextlib.suppress(StorageError):
                await self.storage.defer_deliveries(
                    self._unfinished, worker=self.worker_id, until=utcnow()
                )
            self._unfinished = []

    def _room(self, kind: SubscriptionKind) -> int:
        return min(self._kind_limit[kind] - self._kind_held[kind], self._limit - self._held)

    async def _claim_loop(self) -> None:
        while True:
            # Per kind, a full batch or none: the claim loop is woken when there is
            # room for one, or an owner or host that was full has room again. When
            # owners that hang fill the kind's room, owners holding less than their
            # cap (a healthy partner) still get theirs: a small claim for them alone,
            # beyond the limit by at most a batch.
            # Cleared before claiming, not after: a wake while a claim is under way (an
            # owner worked through half its share) must not be lost to a 1 s nap.
            self._wake.clear()
            again = False
            for kind in SUBSCRIPTION_KINDS:
                batch = self._kind_batch[kind]
                newcomers = self._room(kind) < batch
                cap = self.settings.max_per_owner
                if newcomers and (
                    self._held >= self._limit + cap
                    or self._kind_held[kind] >= self._kind_limit[kind] + cap
                ):
                    continue
                limit = min(batch, cap) if newcomers else batch
                try:
                    claimed = await self._claim(kind, limit, newcomers=newcomers)
                    if claimed:
                        try:
                            await self._start(claimed)
                        except asyncio.CancelledError:  # hand back what did not start
                            self._unfinished.extend(d.id for d in claimed if d.id not in self._jobs)
                            raise
                        except Exception:
                            # Not left claimed for a lease: hand back what did not start.
                            waiting = [d.id for d in claimed if d.id not in self._jobs]
                            await self._hand_back(waiting, MIN_HOST_DEFER)
                            raise
                    again = again or (not newcomers and len(claimed) == batch)
                except StorageError as exc:
                    logger.warning("claiming deliveries failed", extra={"error": str(exc)})
                except Exception:
                    logger.exception("claiming deliveries failed unexpectedly")
            if again:
                continue
            await _nap(self._wake)

    async def _claim(
        self, kind: SubscriptionKind, limit: int, *, newcomers: bool = False
    ) -> list[Delivery]:
        cap, most = self.settings.max_per_owner, self._kind_limit[kind]
        # What each owner holding deliveries here may still take (newcomers: only up
        # to its cap); others, a new share.
        rooms: dict[str, int] = {}
        for owner in self._owners.values():
            if owner.kind == kind and owner.held:
                share = cap if newcomers else owner.share(cap, most)
                rooms[owner.key] = max(0, share - owner.held)
                # No room at all: claim for it again when it has worked through half.
                owner.refill = owner.refill or not rooms[owner.key]
        per_owner = cap if newcomers else _share(cap, most, INITIAL_LATENCY)
        # _start marks the owners that got all they could take (they may have more due).
        self._claim_rooms = (rooms, per_owner)
        claim = asyncio.ensure_future(
            self.storage.claim_deliveries(
                worker=self.worker_id,
                limit=limit,
                lease=self.lease,
                kind=kind,
                per_owner=per_owner,
                owner_rooms=rooms,
            )
        )
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            # A claim already sent may still commit (SQLite runs it on its writer
            # thread): take what it got, to be handed back at shutdown.
            with contextlib.suppress(Exception):
                self._unfinished.extend(d.id for d in await claim)
            raise

    async def _start(self, claimed: list[Delivery]) -> None:
        # Both reads at once: each is a round trip (or a hop to SQLite's reader).
        events, subscriptions = await asyncio.gather(
            self.storage.get_events(sorted({d.event_seq for d in claimed})),
            self.storage.get_subscriptions(sorted({d.subscription_id for d in claimed})),
        )
        per_owner, per_host = self.settings.max_per_owner, self.settings.max_per_host
        deferred: dict[float, list[Delivery]] = {}
        rooms, default_room = self._claim_rooms
        taken: Counter[_Owner] = Counter()
        for delivery in claimed:
            subscription = subscriptions.get(delivery.subscription_id)
            event = events.get(delivery.event_seq)
            if subscription is None or event is None:
                self._record(_gone(delivery, "the subscription or event no longer exists"))
                continue
            owner = self._owner(subscription)
            most = self._kind_limit[owner.kind]
            if owner.held >= owner.share(per_owner, self._kind_limit[owner.kind]):
                # One write per wait, however many deliveries wait that long.
                deferred.setdefault(owner.drain_time(per_owner), []).append(delivery)
                owner.refill = True
                continue
            host = self._host(subscription.url)
            if host.held >= host.share(per_host, most):
                deferred.setdefault(host.drain_time(per_host), []).append(delivery)
                host.refill = True
                continue
            owner.held += 1
            taken[owner] += 1
            owner.hosts.add(host)
            host.held += 1
            self._held += 1
            self._kind_held[owner.kind] += 1
            host.queue.append((delivery, event, subscription, owner))
            self._jobs[delivery.id] = None
            if host.senders < per_host:
                host.senders += 1
                task = asyncio.create_task(self._send_queued(host))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        for owner, count in taken.items():
            if count >= rooms.get(owner.key, default_room):
                owner.refill = True  # it got all it could take: it may have more due
        for wait, waiting in deferred.items():
            # Back when the owner or host will have worked through what it holds: at
            # once for a fast partner, much later for one that hangs.
            await self.storage.defer_deliveries(
                [d.id for d in waiting], worker=self.worker_id,
                until=utcnow() + timedelta(seconds=wait),
            )  # fmt: skip
            # Claim them again when they are due, not at the next poll.
            asyncio.get_running_loop().call_later(wait, self._wake.set)

    async def _send_queued(self, host: _Host) -> None:
        """One of ``host``'s senders: its queued deliveries, one at a time, until none is left."""
        task = asyncio.current_task()
        try:
            while host.queue:
                delivery, event, subscription, owner = host.queue.popleft()
                self._jobs[delivery.id] = task
                try:
                    await self._deliver(delivery, event, subscription, host, owner)
                except Exception:  # _deliver records its own failures; never stop the host
                    logger.exception(
                        "delivery failed unexpectedly", extra={"delivery": delivery.id}
                    )
                finally:
                    self._jobs.pop(delivery.id, None)
        finally:
            host.senders -= 1

    def _host(self, url: str) -> _Host:
        key = _host_name(url)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(key)
            host.latency = self._latencies.pop(("host", key), INITIAL_LATENCY)
        return host

    def _owner(self, subscription: Subscription) -> _Owner:
        key = subscription.owner_key or owner_key(
            subscription.kind, subscription.owner, subscription.url
        )
        owner = self._owners.get(key)
        if owner is None:
            owner = self._owners[key] = _Owner(key, subscription.kind, self.settings.max_per_owner)
            owner.latency = self._latencies.pop(("owner", key), INITIAL_LATENCY)
        return owner

    def _forget(self, host: _Host, owner: _Owner) -> None:
        """Hosts and owners holding nothing are dropped (an attacker can name any
        number of them), their latency remembered for a while: a slow one's share
        stays small when it comes back."""
        for kind, backlog, table in (
            ("host", host, self._hosts), ("owner", owner, self._owners)
        ):  # fmt: skip
            if backlog.held or table.get(backlog.key) is not backlog:
                continue
            del table[backlog.key]
            self._latencies[(kind, backlog.key)] = backlog.latency
            while len(self._latencies) > LATENCY_MEMORY:
                self._latencies.popitem(last=False)

    async def _deliver(
        self,
        delivery: Delivery,
        event: Event,
        subscription: Subscription,
        host: _Host,
        owner: _Owner,
    ) -> None:
        done = False
        try:
            await self._attempt(delivery, event, subscription, host, owner)
            done = True
        except Exception as exc:
            logger.exception("delivery attempt failed", extra={"delivery": delivery.id})
            self._record(self._outcome(delivery, Attempt(None, 0.0, error=f"internal: {exc}")))
            done = True
        finally:
            self._sending.discard(delivery.id)
            self._release(host, owner)
            if not done:
                self._unfinished.append(delivery.id)

    def _release(self, host: _Host, owner: _Owner) -> None:
        """One of ``owner``'s deliveries to ``host`` is no longer held. Wakes the claim
        loop when that makes room for a batch, or for a full owner or host again."""
        kind = owner.kind
        cap = self.settings.max_per_owner
        # Owners and hosts are claimed for again when they fall to half their share,
        # not at each delivery below it: a claim is a write, and a fast owner at its
        # share would otherwise be fed one delivery per claim.
        before = self._room(kind)
        owner.held -= 1
        host.held -= 1
        self._held -= 1
        self._kind_held[kind] -= 1
        batch = self._kind_batch[kind]
        room = self._room(kind)
        refill = False
        for backlog, share in (
            (owner, owner.share(cap, self._kind_limit[kind])),
            (host, host.share(self.settings.max_per_host, self._kind_limit[kind])),
        ):
            if backlog.refill and backlog.held <= share // 2:
                backlog.refill, refill = False, True
        if (
            refill
            or (before < batch <= room)
            or (room < batch and owner.held < cap)  # a newcomers' claim may take its next
        ):
            self._wake.set()
        self._forget(host, owner)

    def _shed(self, host: _Host, owner: _Owner) -> None:
        """Hand back what ``host`` holds beyond its share, and what ``owner`` holds
        beyond its own, last claimed first: their latency has grown, and the rest
        would wait too long in this process."""
        per_owner, per_host = self.settings.max_per_owner, self.settings.max_per_host
        most = self._kind_limit[owner.kind]
        ids: list[int] = []
        excess = host.held - host.share(per_host, most)
        while excess > 0 and host.queue:
            delivery, _, _, its_owner = host.queue.pop()
            ids.append(self._drop(delivery, host, its_owner))
            excess -= 1
        excess = owner.held - owner.share(per_owner, self._kind_limit[owner.kind])
        for its_host in list(owner.hosts) if excess > 0 else ():
            kept: deque[_Job] = deque()
            while excess > 0 and its_host.queue:
                job = its_host.queue.pop()
                if job[3] is owner:
                    ids.append(self._drop(job[0], its_host, owner))
                    excess -= 1
                else:
                    kept.appendleft(job)
            its_host.queue.extend(kept)
        if not ids:
            return
        wait = max(host.drain_time(per_host), owner.drain_time(per_owner))
        task = asyncio.create_task(self._hand_back(ids, wait))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drop(self, delivery: Delivery, host: _Host, owner: _Owner) -> int:
        """A queued delivery taken out of the queue, to be handed back."""
        self._jobs.pop(delivery.id, None)
        self._release(host, owner)
        return delivery.id

    async def _hand_back(self, delivery_ids: list[int], wait: float) -> None:
        until = utcnow() + timedelta(seconds=wait)
        try:
            await self.storage.defer_deliveries(delivery_ids, worker=self.worker_id, until=until)
        except asyncio.CancelledError:
            self._unfinished.extend(delivery_ids)  # handed back at shutdown
            raise
        except StorageError as exc:
            # Still claimed: whoever claims them after the lease sends them.
            logger.warning("handing back deliveries failed", extra={"error": str(exc)})
            return
        # Claim them again when they are due, not at the next poll.
        asyncio.get_running_loop().call_later(wait, self._wake.set)

    async def _attempt(
        self,
        delivery: Delivery,
        event: Event,
        subscription: Subscription,
        host: _Host,
        owner: _Owner,
    ) -> None:
        if subscription.status != "active":
            self._record(_gone(delivery, f"the subscription is {subscription.status}"))
            return
        lease = subscription.lease_expires_at
        if lease is not None and lease <= utcnow():
            self._record(_gone(delivery, "the subscription's lease has expired"))
            return
        # The owner's cap first (a sender waiting for it holds no slot of its kind nor
        # a global one), then its kind's share, then the global cap.
        async with owner.slots, self._kind_slots[subscription.kind], self._slots:
            self._sending.add(delivery.id)
            request = await self._request(delivery, event, subscription)
            attempt = await self.sender.send(request)
        seconds = attempt.latency_ms / 1000
        host.observe(seconds)
        owner.observe(seconds)
        self._shed(host, owner)
        if subscription.kind == "websub" and attempt.status == 410:
            await self.storage.delete_subscription(subscription.id)
            logger.info("websub subscriber answered 410: subscription ended",
                        extra={"subscription": subscription.id})  # fmt: skip
            return
        self._record(self._outcome(delivery, attempt))

    async def _request(
        self, delivery: Delivery, event: Event, subscription: Subscription
    ) -> OutboundRequest:
        if subscription.kind == "websub":
            return await self._websub_request(delivery, event, subscription)
        body = self._bodies.get(event.seq)
        if body is None:
            body = self._bodies[event.seq] = webhooks.event_body(event, self.settings.base_url)
            while len(self._bodies) > BODY_CACHE_EVENTS:
                self._bodies.popitem(last=False)
        return webhook_request(
            delivery, event, subscription, self.settings.base_url, utcnow(), body=body
        )

    async def _websub_request(
        self, delivery: Delivery, event: Event, subscription: Subscription
    ) -> OutboundRequest:
        """The notification, its feed built once per event and topic URL, not once per
        subscriber: thousands of callbacks may follow one feed."""
        key = (event.seq, subscription.topic_url or "")
        pending = self._websub_bodies.get(key)
        if pending is None:
            pending = self._websub_bodies[key] = asyncio.ensure_future(
                websub_request(self.storage, self.settings, delivery, event, subscription)
            )
            while len(self._websub_bodies) > BODY_CACHE_EVENTS:
                self._websub_bodies.popitem(last=False)
        try:
            built = await asyncio.shield(pending)
        except BaseException:
            if self._websub_bodies.get(key) is pending and pending.done():
                del self._websub_bodies[key]  # not kept: the next one tries again
            raise
        topic = parse_topic(self.settings.base_url, subscription.topic_url or "")
        assert topic is not None  # websub_request checked it
        return notification(subscription, topic, built.body, self.settings.base_url)

    def _outcome(self, delivery: Delivery, attempt: Attempt) -> DeliveryOutcome:
        if self.metrics is not None:
            self.metrics.observe_attempt(attempt)
        common = {
            "delivery_id": delivery.id,
            "subscription_id": delivery.subscription_id,
            "status_code": attempt.status,
            "error": _storable(attempt.error),
            "response_body": _storable(attempt.body),
            "latency_ms": attempt.latency_ms,
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

    def _record(self, outcome: DeliveryOutcome) -> None:
        self._outcomes.append(outcome)
        self._outcomes_ready.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._outcomes_ready.wait()
            await asyncio.sleep(FLUSH_INTERVAL)
            await self._flush()

    async def _flush(self, *, tries: int | None = None) -> None:
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


@functools.lru_cache(maxsize=4096)
def _host_name(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _storable(text: str | None) -> str | None:
    """Partner text (a response body, an error naming what it sent) as database text
    can hold it: NUL as U+FFFD. PostgreSQL refuses NUL (the whole outcome batch was
    refused, and retried forever); SQLite's JSON functions cut the text there."""
    return text if text is None or "\x00" not in text else text.replace("\x00", "\ufffd")


def _gone(delivery: Delivery, reason: str) -> DeliveryOutcome:
    return DeliveryOutcome(
        delivery_id=delivery.id,
        subscription_id=delivery.subscription_id,
        status="dead",
        succeeded=False,
        error=reason,
    )


class DeliveryService:
    """Sender + FanOut + Dispatcher + Liveness, run as background tasks of one process.
    ``kind``: what ``syndicate workers`` shows the process as (serve or worker)."""

    def __init__(
        self, storage: Storage, settings: Settings, *, metrics: Metrics | None = None,
        resolver: Resolver | None = None, kind: str = "serve",
    ) -> None:  # fmt: skip
        self.sender = Sender(settings, resolver=resolver)
        self.dispatcher = Dispatcher(storage, settings, self.sender, metrics=metrics)
        self.fanouts = [
            FanOut(storage, kind=kind, on_created=self.dispatcher.wake)
            for kind in SUBSCRIPTION_KINDS
        ]
        self.liveness = Liveness(
            storage, settings, self.dispatcher.worker_id, kind=kind,
            on_released=self.dispatcher.wake,
        )  # fmt: skip
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def worker_id(self) -> str:
        return self.dispatcher.worker_id

    def notify(self) -> None:
        """Something was committed here: fan out now rather than at the next poll."""
        for fanout in self.fanouts:
            fanout.wake()

    async def start(self) -> None:
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
