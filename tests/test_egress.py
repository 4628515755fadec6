"""The egress guard: address policy, subscribe-time checks, and real connections.

Hostnames resolve through fake resolvers, never real DNS (``localhost`` aside); the only
server is a real aiohttp app on 127.0.0.1, so a refused request provably never reached it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from syndicate.delivery.egress import (
    DEV_HINT,
    EgressRefused,
    GuardedResolver,
    address_refusal,
    check_url,
    egress_refusal,
    make_connector,
)

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:4700:4700::1111"

REFUSED = [
    # (address, words the reason must contain)
    ("127.0.0.1", "loopback range (127.0.0.0/8)"),
    ("127.255.255.254", "loopback range (127.0.0.0/8)"),
    ("::1", "loopback range (::1/128)"),
    ("10.0.0.5", "private network range (10.0.0.0/8)"),
    ("172.16.0.1", "private network range (172.16.0.0/12)"),
    ("172.31.255.255", "private network range (172.16.0.0/12)"),
    ("192.168.1.1", "private network range (192.168.0.0/16)"),
    ("100.64.0.1", "carrier-grade NAT range (100.64.0.0/10)"),
    ("100.127.255.254", "carrier-grade NAT range (100.64.0.0/10)"),
    ("169.254.169.254", "link-local range (169.254.0.0/16)"),
    ("fe80::1", "link-local range (fe80::/10)"),
    ("fe80::1%eth0", "link-local range (fe80::/10)"),
    ("224.0.0.1", "multicast range (224.0.0.0/4)"),
    ("239.255.255.250", "multicast range (224.0.0.0/4)"),
    ("ff02::1", "multicast range (ff00::/8)"),
    ("0.0.0.0", "'this network' range (0.0.0.0/8)"),
    ("0.1.2.3", "'this network' range (0.0.0.0/8)"),
    ("255.255.255.255", "limited broadcast range (255.255.255.255/32)"),
    ("240.0.0.1", "reserved range (240.0.0.0/4)"),
    ("192.0.2.1", "documentation range (192.0.2.0/24)"),
    ("198.51.100.7", "documentation range (198.51.100.0/24)"),
    ("203.0.113.9", "documentation range (203.0.113.0/24)"),
    ("2001:db8::1", "documentation range (2001:db8::/32)"),
    ("3fff::1", "documentation range (3fff::/20)"),
    ("198.18.0.1", "benchmarking range (198.18.0.0/15)"),
    ("198.19.255.255", "benchmarking range (198.18.0.0/15)"),
    ("2001:2::1", "benchmarking range (2001:2::/48)"),
    ("192.0.0.8", "IETF protocol assignments range (192.0.0.0/24)"),
    ("192.88.99.1", "6to4 relay anycast range (192.88.99.0/24)"),
    ("fc00::1", "unique-local range (fc00::/7)"),
    ("fd12:3456::1", "unique-local range (fc00::/7)"),
    ("fec0::1", "site-local range (fec0::/10)"),
    ("::", "unspecified range (::/128)"),
    ("::10.0.0.5", "IPv4-compatible range (::/96)"),
    ("::8.8.8.8", "IPv4-compatible range (::/96)"),
    ("100::1", "discard-only range (100::/64)"),
    ("2001::1", "Teredo tunnelling range (2001::/32)"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo tunnelling range (2001::/32)"),
    ("5f00::1", "SRv6 segment identifier range (5f00::/16)"),
    # IPv6 forms carrying an IPv4 address are judged by that address.
    ("::ffff:127.0.0.1", "IPv4-mapped address (::ffff:0:0/96) carrying 127.0.0.1"),
    ("::ffff:10.0.0.5", "carrying 10.0.0.5, which is in a private network range (10.0.0.0/8)"),
    ("::ffff:169.254.169.254", "carrying 169.254.169.254, which is in the link-local range"),
    ("::ffff:0:10.0.0.5", "IPv4-translated address (::ffff:0:0:0/96) carrying 10.0.0.5"),
    ("64:ff9b::10.0.0.5", "NAT64 address (64:ff9b::/96) carrying 10.0.0.5"),
    ("64:ff9b::7f00:1", "carrying 127.0.0.1, which is in the loopback range"),
    ("2002:7f00:1::", "6to4 address (2002::/16) carrying 127.0.0.1"),
    ("2002:a00:5::1", "carrying 10.0.0.5, which is in a private network range"),
    ("2002:c0a8:101::1", "carrying 192.168.1.1"),
    ("64:ff9b:1::808:808", "local-use NAT64 range (64:ff9b:1::/48)"),
]
# No table entry names these; `not ip.is_global` still refuses them.
CATCH_ALL = ["2001:10::1", "2001:100::1"]  # ORCHID, the rest of 2001::/23

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    PUBLIC_V4,
    PUBLIC_V6,
    "2a00:1450:4001:80b::200e",
    "192.31.196.1",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "words"), REFUSED)
def test_refused_addresses_name_their_range(address: str, words: str) -> None:
    reason = address_refusal(ipaddress.ip_address(address))
    assert reason is not None
    assert words in reason


@pytest.mark.parametrize("address", CATCH_ALL)
def test_addresses_no_table_names_fall_to_the_catch_all(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == "not a globally reachable address"


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


# --- check_url --------------------------------------------------------------------------


@dataclass
class FakeDNS:
    """A ``Resolver``: names in ``records`` resolve, anything else fails as DNS would."""

    records: dict[str, list[str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def __call__(self, host: str) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.records:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.records[host]


DNS = {
    "partner.example": [PUBLIC_V4, PUBLIC_V6],
    "internal.example": ["10.0.0.5"],
    "mixed.example": [PUBLIC_V4, "10.0.0.5"],
    "empty.example": [],
}


async def refusal(url: str, *, allow_private: bool = False) -> EgressRefused:
    with pytest.raises(EgressRefused) as info:
        await check_url(url, allow_private=allow_private, resolver=FakeDNS(DNS))
    return info.value


@pytest.mark.parametrize(
    "url",
    ["ftp://partner.example/", "javascript:alert(1)", "file:///etc/passwd", "partner.example/x"],
)
async def test_check_url_refuses_other_schemes(url: str) -> None:
    refused = await refusal(url)
    assert refused.reason == "scheme"
    assert "must be http or https" in str(refused)
    assert (await refusal(url, allow_private=True)).reason == "scheme"


@pytest.mark.parametrize(
    "url", ["https://user:s3cret@partner.example/hook", "http://user@partner.example/"]
)
async def test_check_url_refuses_credentials_without_repeating_them(url: str) -> None:
    refused = await refusal(url)
    assert refused.reason == "credentials"
    assert "s3cret" not in str(refused) and "s3cret" not in str(refused.url)
    assert (await refusal(url, allow_private=True)).reason == "credentials"


async def test_check_url_refuses_empty_host() -> None:
    assert (await refusal("http:///hook")).reason == "no host"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://10.0.0.5/hook",
            "URL host 10.0.0.5 is in a private network range (10.0.0.0/8)",
        ),
        (
            "http://127.0.0.1:8080/",
            "URL host 127.0.0.1 is in the loopback range (127.0.0.0/8)",
        ),
        ("http://[::1]/", "URL host ::1 is in the loopback range (::1/128)"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "URL host 169.254.169.254 is in the link-local range (169.254.0.0/16)",
        ),
        (
            "https://[::ffff:10.0.0.5]/",
            "URL host ::ffff:a00:5 is an IPv4-mapped address (::ffff:0:0/96) carrying "
            "10.0.0.5, which is in a private network range (10.0.0.0/8)",
        ),
    ],
)
async def test_check_url_refuses_private_literals(url: str, message: str) -> None:
    refused = await refusal(url)
    assert str(refused) == message + DEV_HINT
    assert refused.address == refused.host


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.1", "017700000001"])
async def test_check_url_refuses_legacy_numeric_hosts(host: str) -> None:
    """The system resolver reads these as 127.0.0.1 (numerically: no DNS query is sent)."""
    with pytest.raises(EgressRefused, match=r"resolves to 127\.0\.0\.1"):
        await check_url(f"http://{host}/hook", allow_private=False)


async def test_check_url_does_not_resolve_literals() -> None:
    dns = FakeDNS()
    await check_url("https://8.8.8.8/hook", allow_private=False, resolver=dns)
    await check_url(f"https://[{PUBLIC_V6}]:8443/hook", allow_private=False, resolver=dns)
    assert dns.asked == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "https://internal.example/hook",
            "URL host internal.example resolves to 10.0.0.5, "
            "which is in a private network range (10.0.0.0/8)" + DEV_HINT,
        ),
        (
            "https://mixed.example/hook",
            "URL host mixed.example resolves to 10.0.0.5, "
            "which is in a private network range (10.0.0.0/8)" + DEV_HINT,
        ),
        ("https://nowhere.example/", "URL host nowhere.example does not resolve"),
        ("https://empty.example/", "URL host empty.example does not resolve"),
    ],
)
async def test_check_url_refuses_hosts_by_what_they_resolve_to(url: str, message: str) -> None:
    assert str(await refusal(url)) == message


async def test_check_url_passes_public_hosts() -> None:
    dns = FakeDNS(DNS)
    await check_url("https://partner.example/hooks/1?x=1", allow_private=False, resolver=dns)
    assert dns.asked == ["partner.example"]


async def test_allow_private_keeps_only_the_syntax_checks() -> None:
    dns = FakeDNS()
    await check_url("http://127.0.0.1:8080/", allow_private=True, resolver=dns)
    await check_url("http://internal.example/", allow_private=True, resolver=dns)
    assert dns.asked == []


# --- GuardedResolver ----------------------------------------------------------------------


async def test_guarded_resolver_drops_refused_addresses() -> None:
    resolver = GuardedResolver(FakeDNS(DNS), allow_private=False)
    results = await resolver.resolve("mixed.example", 443, socket.AF_UNSPEC)
    assert [r["host"] for r in results] == [PUBLIC_V4]
    assert results[0]["port"] == 443
    only_v6 = await resolver.resolve("partner.example", 443, socket.AF_INET6)
    assert [(r["host"], r["family"]) for r in only_v6] == [(PUBLIC_V6, socket.AF_INET6)]


async def test_guarded_resolver_refuses_when_nothing_is_left() -> None:
    resolver = GuardedResolver(FakeDNS(DNS), allow_private=False)
    with pytest.raises(EgressRefused, match=r"internal\.example resolves to 10\.0\.0\.5"):
        await resolver.resolve("internal.example", 443, socket.AF_UNSPEC)
    with pytest.raises(EgressRefused, match="does not resolve"):
        await resolver.resolve("empty.example", 443, socket.AF_UNSPEC)
    with pytest.raises(socket.gaierror):
        await resolver.resolve("nowhere.example", 443, socket.AF_UNSPEC)


async def test_guarded_resolver_allow_private_passes_everything() -> None:
    resolver = GuardedResolver(FakeDNS(DNS), allow_private=True)
    results = await resolver.resolve("mixed.example", 80, socket.AF_UNSPEC)
    assert [r["host"] for r in results] == [PUBLIC_V4, "10.0.0.5"]


# --- real connections ---------------------------------------------------------------------


@dataclass
class Partner:
    server: TestServer
    hosts: list[str]

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port


@pytest.fixture
async def partner() -> AsyncIterator[Partner]:
    """A webhook endpoint on 127.0.0.1 that records the Host header of every request."""
    hosts: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hosts.append(request.host)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    async with server:
        yield Partner(server, hosts)


async def post(url: str, *, allow_private: bool, dns: FakeDNS | None = None) -> int:
    connector = make_connector(
        allow_private=allow_private, limit=10, limit_per_host=2, resolver=dns
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(url, data=b"{}") as response:
            await response.read()
            return response.status


async def refused_post(
    url: str,
    *,
    dns: FakeDNS | None = None,
    raises: type[aiohttp.ClientConnectorError] = aiohttp.ClientConnectorError,
) -> EgressRefused:
    """The refusal, found where a caller would find it: in the exception aiohttp raises."""
    with pytest.raises(raises) as info:
        await post(url, allow_private=False, dns=dns)
    refused = egress_refusal(info.value)
    assert refused is not None, info.value
    assert info.value.os_error is refused
    assert str(refused) in str(info.value)
    return refused


async def test_literal_loopback_is_refused_at_connect_time(partner: Partner) -> None:
    refused = await refused_post(f"http://127.0.0.1:{partner.port}/hook")
    assert str(refused) == ("URL host 127.0.0.1 is in the loopback range (127.0.0.0/8)" + DEV_HINT)
    assert partner.hosts == []


async def test_literal_ipv6_loopback_is_refused_at_connect_time(partner: Partner) -> None:
    refused = await refused_post(f"http://[::1]:{partner.port}/hook")
    assert refused.address == "::1"


async def test_localhost_is_refused_at_resolve_time(partner: Partner) -> None:
    url = f"http://localhost:{partner.port}/hook"
    refused = await refused_post(url, raises=aiohttp.ClientConnectorDNSError)
    assert refused.host == "localhost"
    assert "loopback range" in refused.reason
    assert partner.hosts == []


@pytest.mark.parametrize("allow_private", [False, True])
async def test_aiohttp_refuses_legacy_numeric_hosts(partner: Partner, allow_private: bool) -> None:
    """aiohttp sends these past the resolver unless it rejects them itself, which it does."""
    with pytest.raises(aiohttp.InvalidUrlClientError):
        await post(f"http://2130706433:{partner.port}/hook", allow_private=allow_private)
    assert partner.hosts == []


async def test_allow_private_reaches_the_local_partner(partner: Partner) -> None:
    assert await post(f"http://127.0.0.1:{partner.port}/hook", allow_private=True) == 200
    assert partner.hosts == [f"127.0.0.1:{partner.port}"]


async def test_connection_goes_to_the_checked_address(partner: Partner) -> None:
    """A name that resolves to 127.0.0.1 is refused, or, when allowed, connects exactly there."""
    dns = FakeDNS({"partner.example": ["127.0.0.1"]})
    url = f"http://partner.example:{partner.port}/hook"
    refused = await refused_post(url, dns=dns)
    assert str(refused) == (
        "URL host partner.example resolves to 127.0.0.1, "
        "which is in the loopback range (127.0.0.0/8)" + DEV_HINT
    )
    assert partner.hosts == []
    assert await post(url, allow_private=True, dns=dns) == 200
    assert partner.hosts == [f"partner.example:{partner.port}"]


async def test_other_connection_errors_are_not_refusals() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await post(f"http://127.0.0.1:{closed_port}/hook", allow_private=True)
    assert egress_refusal(info.value) is None
    with pytest.raises(aiohttp.ClientConnectorDNSError) as dns_info:
        await post("http://nowhere.example/hook", allow_private=False, dns=FakeDNS())
    assert egress_refusal(dns_info.value) is None
