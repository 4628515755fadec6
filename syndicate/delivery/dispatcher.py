"""The dispatcher: claims due deliveries under a lease and sends them, capped per
host, per owner, per kind and in all; outcomes go back in batches (outcomes.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from storage import Storage, StorageError
from storage.records import (
    SUBSCRIPTION_KINDS,
    Delivery,
    Event,
    Subscription,
    SubscriptionKind,
    owner_key,
    utcnow,
)
from syndicate.core.settings import Settings
from syndicate.delivery.fanout import nap
from syndicate.delivery.lanes import (
    HOST_BACKLOG_FACTOR,
    HOST_BACKLOG_SECONDS,
    INITIAL_LATENCY,
    LATENCY_MEMORY,
    LATENCY_WEIGHT,
    MIN_HOST_DEFER,
    Host,
    Job,
    Owner,
    host_name,
    share_of,
)
from syndicate.delivery.outcomes import Outcomes, gone
from syndicate.delivery.requests import Requests
from syndicate.delivery.sender import Attempt, Sender

if TYPE_CHECKING:
    from syndicate.delivery.metrics import Metrics

logger = logging.getLogger("syndicate.delivery")

CLAIM_BATCH = 256
#: Deliveries a process holds (queued or being sent): this many times ``max_in_flight``.
#: Claims are made ahead of sending, so that the next batch lands before the senders
#: run dry: a claim waits for the database, which is slowest when the sending is busiest.
CLAIM_AHEAD = 4  # <= HOST_BACKLOG_FACTOR: see the lease


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
        self._hosts: dict[str, Host] = {}
        self._owners: dict[str, Owner] = {}
        self._latencies: OrderedDict[tuple[str, str], float] = OrderedDict()
        #: The owners' rooms in the last claim (and the room of any other owner).
        self._claim_rooms: tuple[dict[str, int], int] = ({}, 0)
        # Sender tasks: up to max_per_host per host, each sending its host's queued
        # deliveries one after another (a task per delivery cost more than all the
        # dispatcher's other work per delivery).
        self._tasks: set[asyncio.Task[None]] = set()
        self.outcomes = Outcomes(self.storage, settings, self.worker_id, self.metrics)
        self.requests = Requests(self.storage, settings)
        self._held = 0
        self._kind_held = dict.fromkeys(SUBSCRIPTION_KINDS, 0)
        #: Deliveries queued (None) or taken by a sender task.
        self._jobs: dict[int, asyncio.Task[None] | None] = {}
        self._sending: set[int] = set()
        self._unfinished: list[int] = []
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
        flusher = asyncio.create_task(self.outcomes.run())
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
        await self.outcomes.flush(tries=3)
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
            await nap(self._wake)

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
        per_owner = cap if newcomers else share_of(cap, most, INITIAL_LATENCY)
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
        taken: Counter[Owner] = Counter()
        for delivery in claimed:
            subscription = subscriptions.get(delivery.subscription_id)
            event = events.get(delivery.event_seq)
            if subscription is None or event is None:
                self.outcomes.record(gone(delivery, "the subscription or event no longer exists"))
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
                [d.id for d in waiting],
                worker=self.worker_id,
                until=utcnow() + timedelta(seconds=wait),
            )
            # Claim them again when they are due, not at the next poll.
            asyncio.get_running_loop().call_later(wait, self._wake.set)

    async def _send_queued(self, host: Host) -> None:
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

    def _host(self, url: str) -> Host:
        key = host_name(url)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = Host(key)
            host.latency = self._latencies.pop(("host", key), INITIAL_LATENCY)
        return host

    def _owner(self, subscription: Subscription) -> Owner:
        key = subscription.owner_key or owner_key(
            subscription.kind, subscription.owner, subscription.url
        )
        owner = self._owners.get(key)
        if owner is None:
            owner = self._owners[key] = Owner(key, subscription.kind, self.settings.max_per_owner)
            owner.latency = self._latencies.pop(("owner", key), INITIAL_LATENCY)
        return owner

    def _forget(self, host: Host, owner: Owner) -> None:
        """Hosts and owners holding nothing are dropped (an attacker can name any
        number of them), their latency remembered for a while: a slow one's share
        stays small when it comes back."""
        for kind, backlog, table in (("host", host, self._hosts), ("owner", owner, self._owners)):
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
        host: Host,
        owner: Owner,
    ) -> None:
        done = False
        try:
            await self._attempt(delivery, event, subscription, host, owner)
            done = True
        except Exception as exc:
            logger.exception("delivery attempt failed", extra={"delivery": delivery.id})
            self.outcomes.record(
                self.outcomes.of(delivery, Attempt(None, 0.0, error=f"internal: {exc}"))
            )
            done = True
        finally:
            self._sending.discard(delivery.id)
            self._release(host, owner)
            if not done:
                self._unfinished.append(delivery.id)

    def _release(self, host: Host, owner: Owner) -> None:
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

    def _shed(self, host: Host, owner: Owner) -> None:
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
            kept: deque[Job] = deque()
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

    def _drop(self, delivery: Delivery, host: Host, owner: Owner) -> int:
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
        host: Host,
        owner: Owner,
    ) -> None:
        if subscription.status != "active":
            self.outcomes.record(gone(delivery, f"the subscription is {subscription.status}"))
            return
        lease = subscription.lease_expires_at
        if lease is not None and lease <= utcnow():
            self.outcomes.record(gone(delivery, "the subscription's lease has expired"))
            return
        # The owner's cap first (a sender waiting for it holds no slot of its kind nor
        # a global one), then its kind's share, then the global cap.
        async with owner.slots, self._kind_slots[subscription.kind], self._slots:
            self._sending.add(delivery.id)
            request = await self.requests.build(delivery, event, subscription)
            attempt = await self.sender.send(request)
        seconds = attempt.latency_ms / 1000
        host.observe(seconds)
        owner.observe(seconds)
        self._shed(host, owner)
        if subscription.kind == "websub" and attempt.status == 410:
            await self.storage.delete_subscription(subscription.id)
            logger.info(
                "websub subscriber answered 410: subscription ended",
                extra={"subscription": subscription.id},
            )
            return
        self.outcomes.record(self.outcomes.of(delivery, attempt))
