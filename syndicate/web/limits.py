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

from aiohttp import web

from syndicate.core.errors import Problem
from syndicate.core.rate import RateLimiter

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
