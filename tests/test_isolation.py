"""No partner, subscriber or retry storm holds back another partner's pushes.

A real service, real partner servers: hanging endpoints on many loopback addresses
(127.0.1.x, 127.0.2.x: each its own host to the dispatcher) and one healthy partner on
127.0.0.1 whose pushes are timed from the article's POST to their arrival, with the
signatures checked by the standardwebhooks package. Runs on both backends."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from conftest import Client, ServerFactory
from receiver import Receiver
from standardwebhooks import Webhook

from storage import Storage
from storage.records import utcnow

SECRET = "whsec_" + "A" * 43 + "="
#: Hanging endpoints answer after this long: every attempt to them times out.
HANG_SECONDS = 30.0
SETTINGS: dict[str, Any] = {
    "allow_private_targets": True,
    "delivery_timeout": 1.0,
    "delivery_connect_timeout": 1.0,
    # Failed attempts wait long: the test is about first attempts and one retry storm.
    "retry_schedule": (60.0,),
}
#: WebSub subscriptions in the flood test: enough to fill every slot before fair
#: dispatch (50 hosts x 8 > 256); bench/isolation.py measures the issue's 5,000.
WEBSUB_SUBSCRIPTIONS = 2000
#: Bounds on the healthy partner's p50 and slowest push, seconds: everything here shares
#: one event loop and 2 cores, so these are looser than the targets that
#: bench/isolation.py measures (p50 <= 0.1 s, p99 <= 2 s); before fair dispatch the pushes
#: waited for the hanging ones' timeouts (p50 >= 1 s).
P50_TARGET = 0.5
MAX_TARGET = 2.0


class Hosts:
    """One aiohttp app listening on many loopback addresses: a host per address."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.behaviour: Callable[[web.Request], Awaitable[web.StreamResponse]] = self._hang
        self.requests = 0
        self.ports: dict[str, int] = {}
        self._runner: web.AppRunner | None = None

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(HANG_SECONDS)
        return web.Response(status=204)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await request.read()
        return await self.behaviour(request)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, handle_signals=False)
        await self._runner.setup()
        for address in self.addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, 0))
            self.ports[address] = sock.getsockname()[1]
            await web.SockSite(self._runner, sock).start()

    def url(self, address: str, path: str) -> str:
        return f"http://{address}:{self.ports[address]}{path}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def hosts_on(prefix: str, count: int) -> Hosts:
    hosts = Hosts([f"{prefix}.{n}" for n in range(1, count + 1)])
    await hosts.start()
    return hosts


@pytest.fixture
async def many_hosts() -> AsyncIterator[Callable[[str, int], Awaitable[Hosts]]]:
    started: list[Hosts] = []

    async def start(prefix: str, count: int) -> Hosts:
        hosts = await hosts_on(prefix, count)
        started.append(hosts)
        return hosts

    yield start
    for hosts in started:
        await hosts.close()


async def webhook(store: Storage, sub_id: str, url: str, owner: str) -> None:
    await store.create_subscription(
        id=sub_id, kind="webhook", url=url, topics=["*"], events=[], secret=SECRET, owner=owner
    )


def article(n: int) -> dict[str, Any]:
    return {
        "id": f"iso-{n}",
        "title": f"Liver news {n}",
        "content": "<p>About the liver.</p>",
        "topics": ["liver-health"],
    }


async def operator_service(
    start_server: ServerFactory, tokens: dict[str, str], **overrides: Any
) -> Client:
    """The service with SETTINGS (and ``overrides``), sending the operator token."""
    client = await start_server(**{**SETTINGS, **overrides})
    client.token = tokens["operator"]
    return client


async def healthy_latencies(
    client: Client, receiver: Receiver, count: int, *, first: int = 0, gap: float = 0.1
) -> list[float]:
    """POST ``count`` articles, ``gap`` apart; seconds from each POST's answer to the
    healthy partner's verified push of it. Fails if any push is missing after 20 s."""
    posted: dict[str, float] = {}
    for n in range(first, first + count):
        async with client.request("POST", "/api/articles", json=article(n)) as resp:
            assert resp.status == 201, await resp.text()
        posted[f"iso-{n}"] = time.monotonic()
        await asyncio.sleep(gap)

    def arrived() -> dict[str, float]:
        seen: dict[str, float] = {}
        for r in receiver.at("/healthy"):
            payload = Webhook(SECRET).verify(r.body, r.headers)
            if payload["data"]["id"] in posted:
                seen.setdefault(payload["data"]["id"], r.at)
        return seen

    await receiver.wait_for(lambda: len(arrived()) == len(posted), timeout=20)
    seen = arrived()
    return [seen[key] - posted[key] for key in posted]


def assert_fast(latencies: list[float]) -> None:
    p50 = statistics.median(latencies)
    slowest = max(latencies)
    assert p50 <= P50_TARGET, f"p50 {p50:.3f}s > {P50_TARGET}s: {sorted(latencies)}"
    assert slowest <= MAX_TARGET, f"slowest {slowest:.3f}s > {MAX_TARGET}s: {sorted(latencies)}"


async def test_a_partner_with_100_hanging_hosts_does_not_hold_back_another(
    start_server: ServerFactory,
    tokens: dict[str, str],
    store: Storage,
    receiver: Receiver,
    many_hosts: Callable[[str, int], Awaitable[Hosts]],
) -> None:
    """Finding 2: one partner's hanging subscriptions on many hosts filled every
    global slot (8 per host x 32 hosts = 256), and another partner's pushes waited
    for their timeouts. Now that partner holds at most max_per_owner slots."""
    hanging = await many_hosts("127.0.1", 100)
    for n, address in enumerate(hanging.addresses):
        await webhook(store, f"sub_hang_{n:03d}", hanging.url(address, "/hook"), "partner-a")
    await webhook(store, "sub_healthy", receiver.url("/healthy"), "partner-b")
    client = await operator_service(start_server, tokens)

    latencies = await healthy_latencies(client, receiver, 10)

    assert_fast(latencies)
    assert hanging.requests > 0, "the hanging partner's pushes were being sent too"


async def test_hanging_websub_subscribers_do_not_hold_back_a_webhook_partner(
    start_server: ServerFactory,
    tokens: dict[str, str],
    store: Storage,
    receiver: Receiver,
    many_hosts: Callable[[str, int], Awaitable[Hosts]],
) -> None:
    """Finding 1: anyone can subscribe through the hub; thousands of WebSub callbacks
    that hang took every slot from the webhook partners. WebSub now uses at most its
    share of the slots (1 - webhook_share), and each callback host its owner cap."""
    hanging = await many_hosts("127.0.2", 50)
    client = await operator_service(start_server, tokens)
    topic_url = client.url("/feeds/liver-health.atom")
    expires = utcnow() + timedelta(days=1)
    for n in range(WEBSUB_SUBSCRIPTIONS):
        address = hanging.addresses[n % len(hanging.addresses)]
        await store.create_subscription(
            id=f"ws_{n:05d}",
            kind="websub",
            url=hanging.url(address, f"/cb/{n}"),
            topics=["liver-health"],
            events=[],
            secret=None,
            lease_expires_at=expires,
            topic_url=topic_url,
        )
    await webhook(store, "sub_healthy", receiver.url("/healthy"), "partner-b")

    latencies = await healthy_latencies(client, receiver, 4, gap=0.3)

    assert_fast(latencies)
    assert hanging.requests > 0, "the WebSub notifications were being sent too"


async def test_1000_retries_due_at_once_do_not_hold_back_first_attempts(
    start_server: ServerFactory,
    tokens: dict[str, str],
    store: Storage,
    receiver: Receiver,
    many_hosts: Callable[[str, int], Awaitable[Hosts]],
) -> None:
    """1,000 failed deliveries of one partner come due together (and then hang): a
    healthy partner's new pushes go first, not after the storm."""
    failing = await many_hosts("127.0.3", 20)

    async def refuse(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    failing.behaviour = refuse
    for n in range(100):
        address = failing.addresses[n % len(failing.addresses)]
        await webhook(store, f"sub_fail_{n:03d}", failing.url(address, "/hook"), "partner-c")
    await webhook(store, "sub_healthy", receiver.url("/healthy"), "partner-b")
    client = await operator_service(start_server, tokens, retry_schedule=(3.0, 60.0))
    await healthy_latencies(client, receiver, 10, gap=0.0)  # 1,000 deliveries fail
    deadline = time.monotonic() + 10
    while failing.requests < 1000:
        assert time.monotonic() < deadline, f"only {failing.requests} attempts failed"
        await asyncio.sleep(0.05)
    failing.behaviour = failing._hang  # the retries hang

    # The retries come due about 3 s after their failures: measure across that.
    latencies = await healthy_latencies(client, receiver, 10, first=100, gap=0.3)

    assert_fast(latencies)
    assert failing.requests > 1000, "the retries were being sent too"
