"""Egress guard: a partner's webhook URL must not reach Syndicate's own network (SSRF).

Unguarded, anyone who may subscribe could make Syndicate POST to 127.0.0.1, the cloud metadata
service (169.254.169.254) or a private database. ``check_url`` refuses such URLs at subscribe
time, so the partner learns why at once; ``make_connector`` refuses them again at send time,
because DNS answers change (rebinding), with two layers inside aiohttp's ``TCPConnector``:

1. ``GuardedResolver`` drops refused addresses from every lookup. aiohttp connects to exactly
   the addresses the resolver returned (its DNS cache holds only those), so the address that
   was checked is the address connected to: there is no second lookup.
2. A ``socket_factory`` checks the address of every connection attempt, because
   ``TCPConnector._resolve_host`` returns IP-literal hosts (``http://[::1]/``) without asking
   the resolver. ``socket_factory`` is public aiohttp API and sees every address, however it
   was found. (aiohttp itself rejects legacy numeric hosts such as ``http://2130706433/``.)

``EgressRefused`` is an ``OSError``, so aiohttp reports it as any failed connection: a
``ClientConnectorError`` (``ClientConnectorDNSError`` from layer 1) whose ``os_error`` is the
refusal; ``egress_refusal(exc)`` finds it. Redirects use the same connector. A proxy would
defeat the guard (it checks the proxy's address), so the session must not use ``trust_env``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from syndicate.core.errors import SyndicateError

logger = logging.getLogger("syndicate.egress")  # the name logs have always had

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Awaitable[Sequence[str]]]
"""Host name -> IP address strings; injected so that tests never use real DNS."""

# The cache holds only addresses that passed the guard, so it opens no rebinding window; the
# TTL only bounds how stale a partner's address may be. (ttl_dns_cache=None is "forever".)
DEFAULT_DNS_TTL = 10

# Explicit ranges give reasons a partner can act on; `not is_global` catches the rest.
_RANGES = {
    "the 'this network'": "0.0.0.0/8",
    "a private network": "10.0.0.0/8 172.16.0.0/12 192.168.0.0/16",
    "the carrier-grade NAT": "100.64.0.0/10",
    "the loopback": "127.0.0.0/8 ::1/128",
    "the link-local": "169.254.0.0/16 fe80::/10",
    "the IETF protocol assignments": "192.0.0.0/24",
    "a documentation": "192.0.2.0/24 198.51.100.0/24 203.0.113.0/24 2001:db8::/32 3fff::/20",
    "the 6to4 relay anycast": "192.88.99.0/24",
    "the benchmarking": "198.18.0.0/15 2001:2::/48",
    "the multicast": "224.0.0.0/4 ff00::/8",
    "the limited broadcast": "255.255.255.255/32",
    "the reserved": "240.0.0.0/4",
    "the unspecified": "::/128",
    "the deprecated IPv4-compatible": "::/96",
    "the discard-only": "100::/64",
    "the Teredo tunnelling": "2001::/32",
    "the SRv6 segment identifier": "5f00::/16",
    # RFC 8215 lets each operator choose where the IPv4 address sits: it cannot be decoded.
    "the local-use NAT64": "64:ff9b:1::/48",
    "the unique-local": "fc00::/7",
    "the deprecated site-local": "fec0::/10",
}
_REFUSED = [(ipaddress.ip_network(n), why) for why, ns in _RANGES.items() for n in ns.split()]
_REFUSED.sort(key=lambda row: -row[0].prefixlen)  # 255.255.255.255 is broadcast, not 240/4
# IPv6 forms that reach an IPv4 address, and where in them it sits.
_EMBEDDING = (
    (ipaddress.IPv6Network("::ffff:0:0/96"), "an IPv4-mapped address", 0),
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), "an IPv4-translated address", 0),
    (ipaddress.IPv6Network("64:ff9b::/96"), "a NAT64 address", 0),
    (ipaddress.IPv6Network("2002::/16"), "a 6to4 address", 80),  # IPv4 in bits 16-47
)


def address_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be contacted ("in a private network range (10.0.0.0/8)"), or None."""
    for network, label in _REFUSED:
        if ip.version == network.version and ip in network:
            return f"in {label} range ({network})"
    if isinstance(ip, ipaddress.IPv6Address):
        for network, label, shift in _EMBEDDING:
            if ip in network:
                inner = ipaddress.IPv4Address((int(ip) >> shift) & 0xFFFFFFFF)
                reason = address_refusal(inner)  # None: as safe as the IPv4 address it carries
                return reason and f"{label} ({network}) carrying {inner}, which is {reason}"
    if not ip.is_global or ip.is_private or ip.is_reserved or ip.is_multicast:
        return "not a globally reachable address"
    return None


def _refusal_of(address: str) -> str | None:
    try:
        return address_refusal(ipaddress.ip_address(address))
    except ValueError:
        return "not an IP address"


class EgressRefused(SyndicateError, OSError):
    """The guard will not contact a webhook URL; ``str()`` is written for the partner.

    An ``OSError`` (``EACCES``: a policy refusal, like a firewall's) so that aiohttp reports it
    as a failed connection. ``url`` has no credentials; fields not known are None.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        host: str | None = None,
        address: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(errno.EACCES, message)
        self.message, self.reason = message, reason
        self.host, self.address, self.url = host, address, url

    def __str__(self) -> str:
        return self.message


#: Ends every address refusal: what lets a developer reach receivers on their own machine.
DEV_HINT = " (for development only, the service allows it with SYNDICATE_ALLOW_PRIVATE_TARGETS=1)"


def _refuse(host: str, address: str, reason: str, url: str | None = None) -> EgressRefused:
    resolved = "" if host == address else f" resolves to {address}, which"
    message = f"URL host {host}{resolved} is {reason}{DEV_HINT}"
    return EgressRefused(message, reason=reason, host=host, address=address, url=url)


def _parse(url: str) -> URL:
    """The URL as aiohttp will read it, if its syntax is acceptable."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise EgressRefused("URL is not a valid URL", reason="invalid") from exc
    if parsed.scheme not in ("http", "https"):
        scheme = repr(parsed.scheme) if parsed.scheme else "missing"
        message = f"URL scheme must be http or https, not {scheme}"
        raise EgressRefused(message, reason="scheme")
    if not parsed.raw_host:
        raise EgressRefused("URL has no host", reason="no host")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        message = "URL must not contain credentials (user:password@host)"
        raise EgressRefused(message, reason="credentials", url=str(parsed.with_user(None)))
    return parsed


async def _system_resolve(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_url(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> None:
    """Raise ``EgressRefused`` if deliveries to ``url`` would be refused or could not go out.

    Every address must pass: a partner whose DNS mixes public and private addresses hears so
    now, not as intermittent failures later. ``allow_private`` keeps only the syntax checks.
    """
    parsed = _parse(url)
    if allow_private:
        return
    host, safe_url = parsed.host or "", str(parsed)
    try:
        addresses: Sequence[str] = [str(ipaddress.ip_address(host))]
        host = addresses[0]
    except ValueError:
        try:
            addresses = await (resolver or _system_resolve)(parsed.raw_host or host)
        except OSError as exc:
            logger.info("webhook host does not resolve", extra={"host": host, "error": str(exc)})
            addresses = []
    if not addresses:
        message = f"URL host {host} does not resolve"
        raise EgressRefused(message, reason="does not resolve", host=host, url=safe_url)
    for address in addresses:
        if (reason := _refusal_of(address)) is not None:
            raise _refuse(host, address, reason, safe_url)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver returning only the addresses the guard allows (layer 1).

    Raises ``EgressRefused`` when none remain. ``resolver`` defaults to ``getaddrinfo`` (as in
    aiohttp's ``ThreadedResolver``), which ``check_url`` uses too.
    """

    def __init__(self, resolver: Resolver | None = None, *, allow_private: bool) -> None:
        self._resolve = resolver or _system_resolve
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._resolve(host)
        refusals = {} if self._allow_private else {a: r for a in addresses if (r := _refusal_of(a))}
        if refusals:
            logger.warning("egress guard refused", extra={"host": host, "refused": refusals})
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        results = [
            ResolveResult(hostname=host, host=a, port=port, family=f, proto=0, flags=flags)
            for a in addresses
            if a not in refusals and family in (socket.AF_UNSPEC, f := _family(a))
        ]
        if results:
            return results
        if refusals:
            raise _refuse(host, *next(iter(refusals.items())))
        message = f"URL host {host} does not resolve"
        raise EgressRefused(message, reason="does not resolve", host=host)

    async def close(self) -> None:
        pass


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _guarded_socket(addr_info: tuple[int, int, int, str, tuple[Any, ...]]) -> socket.socket:
    """Layer 2: the last look at the address a socket is about to connect to."""
    family, type_, proto, _, sockaddr = addr_info
    if (reason := _refusal_of(str(sockaddr[0]))) is not None:
        raise _refuse(str(sockaddr[0]), str(sockaddr[0]), reason)
    return socket.socket(family, type_, proto)


def make_connector(
    *, allow_private: bool, limit: int, limit_per_host: int, resolver: Resolver | None = None
) -> aiohttp.TCPConnector:
    """The delivery session's connector, with both layers of the guard (call inside a loop)."""
    return aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit_per_host,
        resolver=GuardedResolver(resolver, allow_private=allow_private),
        ttl_dns_cache=DEFAULT_DNS_TTL,
        socket_factory=None if allow_private else _guarded_socket,
    )


def egress_refusal(exc: BaseException) -> EgressRefused | None:
    """The guard's refusal behind an exception raised by ``ClientSession``, or None."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    return exc if isinstance(exc, EgressRefused) else None
