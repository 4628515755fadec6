"""What the dispatcher holds per host and per owner, and how fast each drains: the
numbers behind "no caller can hold back another" (see Dispatcher)."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from urllib.parse import urlsplit

from storage.records import Delivery, Event, Subscription, SubscriptionKind

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


class Backlog:
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
        return share_of(cap, most, self.latency)


def share_of(cap: int, most: int, latency: float) -> int:
    paced = int(cap * HOST_BACKLOG_SECONDS / max(latency, 1e-4))
    return max(cap * HOST_BACKLOG_FACTOR, min(most, paced))


class Owner(Backlog):
    """One owner's deliveries in this process (a partner, or a callback host): at most
    ``max_per_owner`` of its requests are in flight, however many hosts it has, so an
    owner that hangs holds at most that many slots until their timeouts fire."""

    def __init__(self, key: str, kind: SubscriptionKind, cap: int) -> None:
        super().__init__(key)
        self.kind = kind
        self.slots = asyncio.Semaphore(cap)
        #: The hosts whose queues hold (or held) this owner's deliveries.
        self.hosts: set[Host] = set()


class Host(Backlog):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        #: Deliveries waiting for one of this host's senders, in claim order.
        self.queue: deque[Job] = deque()
        #: Sender tasks working through ``queue``: at most ``max_per_host``.
        self.senders = 0


#: A claimed delivery with what it needs to be sent, queued at its host.
Job = tuple[Delivery, Event, Subscription, Owner]


@functools.lru_cache(maxsize=4096)
def host_name(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
