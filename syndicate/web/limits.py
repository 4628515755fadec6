"""Rate limits: token buckets per partner token and per client address.

Applied to partners' writes, to failed authentication (per client, against
token guessing) and to ``POST /hub`` (per client). A client is an IPv4 address
or an IPv6 /64 (``address_key``). Operator tokens are not limited: operators
bulk-import, and their tokens are the most trusted secret the service has.
Buckets live in each process's memory; with ``--workers N`` the effective
limit is up to N times the configured one.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass

from aiohttp import web

from syndicate.core.errors import Problem

MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now: float | None = None) -> float | None:
        """Spend one request for ``key``; the seconds to wait when there is none left."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled completely (they carry no state)."""
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


def enforce(request: web.Request, *keys: str) -> None:
    """429 with ``Retry-After`` when any of the keys is out of requests."""
    limiter = request.app[RATE_LIMITER]
    waits = [w for w in (limiter.take(k) for k in keys) if w is not None]
    if waits:
        seconds = max(1, math.ceil(max(waits)))
        raise Problem(
            429,
            f"too many requests; try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


def client_key(request: web.Request) -> str:
    """Whose request this is, for per-client limits: ``address_key`` of its peer."""
    return address_key(request.remote)


def address_key(remote: str | None) -> str:
    """``ip:`` + an IPv4 address as is, an IPv6 one by its /64 (one site's usual
    allocation: a client picks any address inside it at will), an IPv4-mapped
    IPv6 address as the IPv4 one."""
    try:
        address = ipaddress.ip_address((remote or "").partition("%")[0])
    except ValueError:
        return f"ip:{remote or 'unknown'}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"ip:{address}"
