"""The hub's limits against real subscriber servers on 127.0.0.x: verifications under
way (in all, per client address, per callback domain), new subscriptions per second,
subscriptions per topic feed; and the per-host count as an index look-up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Client, ServerFactory
from test_websub import FAST, Subscriber, hub_post

from storage import Storage
from storage.records import utcnow

TOPIC = "liver-health"


class Hanging:
    """A callback server on ``host`` whose verification GETs never answer (until
    closed): every verification sent to it stays under way."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.gets = 0
        self._release = asyncio.Event()
        self.server: TestServer | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.gets += 1
        await self._release.wait()
        return web.Response(status=404)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self.server = TestServer(app, host=self.host)
        await self.server.start_server()

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def close(self) -> None:
        self._release.set()
        if self.server is not None:
            await self.server.close()


@pytest.fixture
async def hanging() -> AsyncIterator[tuple[Hanging, Hanging]]:
    servers = (Hanging("127.0.0.1"), Hanging("127.0.0.2"))
    for server in servers:
        await server.start()
    yield servers
    for server in servers:
        await server.close()


async def start_hub(start_server: ServerFactory, tokens: dict[str, str], **settings: Any) -> Client:
    client = await start_server(**{**FAST, "delivery_timeout": 10.0, **settings})
    client.token = tokens["operator"]
    async with client.request("PUT", f"/api/topics/{TOPIC}", json={}) as resp:
        assert resp.status == 201
    return client


def form(client: Client, callback: str, fmt: str = "rss") -> dict[str, str]:
    return {
        "hub.mode": "subscribe",
        "hub.callback": callback,
        "hub.topic": f"{client.base_url}/feeds/{TOPIC}.{fmt}",
    }


async def post_from(client: Client, source: str, data: dict[str, str]) -> tuple[int, str, str]:
    """POST /hub from the source address ``source`` (127.0.0.x): status, body, Retry-After."""
    # force_close: no connection kept for later, and a turn of the loop after closing,
    # so the socket is closed by the time this returns (a transport closed later was a
    # ResourceWarning in whatever test ran next).
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(client.url("/hub"), data=data) as resp:
            answer = resp.status, await resp.text(), resp.headers.get("Retry-After", "")
    await asyncio.sleep(0)
    return answer


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        getattr(r, "limit", "")
        for r in caplog.records
        if r.name == "syndicate.websub" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize(
    ("limit", "settings"),
    [
        ("hub_max_pending", {"hub_max_pending": 3}),
        ("hub_max_pending_per_client", {"hub_max_pending_per_client": 3}),
        ("hub_max_pending_per_domain", {"hub_max_pending_per_domain": 3}),
    ],
)
async def test_verifications_under_way_are_capped(
    # First, so it is torn down last: the hub (start_server's) stops verifying before
    # the callback servers close. The other way round, a verification retried into a
    # closing server left a socket to the garbage collector, which failed a later test
    # with an unraisable ResourceWarning (and the teardown took 11 s).
    hanging: tuple[Hanging, Hanging],
    start_server: ServerFactory,
    tokens: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    limit: str,
    settings: dict[str, int],
) -> None:
    client = await start_hub(start_server, tokens, **settings)
    near, far = hanging
    for i in range(3):
        status, _, _ = await post_from(client, "127.0.0.1", form(client, near.url(f"/cb{i}")))
        assert status == 202
    for _ in range(50):
        if near.gets == 3:
            break
        await asyncio.sleep(0.02)
    assert near.gets == 3, "three verifications are under way"

    status, text, retry = await post_from(client, "127.0.0.1", form(client, near.url("/cb9")))
    assert status == 429, text
    assert "too many verifications under way" in text
    assert retry.isdigit() and int(retry) >= 1
    assert refusals(caplog) == [limit], "one log line, naming the limit"

    # The others' share is untouched: another address, another callback domain.
    other_client = await post_from(client, "127.0.0.2", form(client, near.url("/cb9")))
    other_domain = await post_from(client, "127.0.0.1", form(client, far.url("/cb9")))
    both = await post_from(client, "127.0.0.2", form(client, far.url("/cb9")))
    expected = {
        "hub_max_pending": (429, 429, 429),
        "hub_max_pending_per_client": (202, 429, 202),
        "hub_max_pending_per_domain": (429, 202, 202),
    }[limit]
    assert (other_client[0], other_domain[0], both[0]) == expected


async def test_a_finished_verification_frees_its_place(
    start_server: ServerFactory, tokens: dict[str, str], store: Storage
) -> None:
    client = await start_hub(start_server, tokens, hub_max_pending=1)
    subscriber = Subscriber()
    await subscriber.start()
    try:
        for i in range(3):
            data = form(client, subscriber.url(f"/cb{i}"))
            assert (await hub_post(client, data))[0] == 202
            for _ in range(100):
                if len(await store.list_subscriptions(kind="websub")) == i + 1:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)  # the verification's task ends after the write
        assert len(await store.list_subscriptions(kind="websub")) == 3
    finally:
        await subscriber.close()


async def test_new_subscriptions_are_rate_limited_renewals_are_not(
    start_server: ServerFactory,
    tokens: dict[str, str],
    store: Storage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await start_hub(start_server, tokens, hub_subscribe_rate=0.2)
    subscriber = Subscriber()
    await subscriber.start()
    try:
        assert (await hub_post(client, form(client, subscriber.url("/a"))))[0] == 202
        for _ in range(100):
            if await store.list_subscriptions(kind="websub"):
                break
            await asyncio.sleep(0.02)
        status, text, retry = await post_from(
            client, "127.0.0.1", form(client, subscriber.url("/b"))
        )
        assert status == 429, text
        assert "too many new subscriptions" in text and 1 <= int(retry) <= 5
        assert refusals(caplog) == ["hub_subscribe_rate"]
        renewal = form(client, subscriber.url("/a"))
        assert (await hub_post(client, renewal))[0] == 202, "renewing creates nothing"
    finally:
        await subscriber.close()


async def test_a_topic_feed_with_too_many_subscribers_denies(
    start_server: ServerFactory,
    tokens: dict[str, str],
    store: Storage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await start_hub(start_server, tokens, websub_max_per_topic=2)
    subscriber = Subscriber()
    await subscriber.start()
    try:
        for path in ("/a", "/b"):
            await store.create_subscription(
                id=f"ws-{path[1:]}",
                kind="websub",
                url=subscriber.url(path),
                topics=[TOPIC],
                events=[],
                secret=None,
                lease_expires_at=utcnow() + timedelta(days=1),
                topic_url=form(client, "")["hub.topic"],
            )
        assert (await hub_post(client, form(client, subscriber.url("/c"))))[0] == 202
        await subscriber.wait_for(lambda: subscriber.gets(), timeout=5)
        denied = subscriber.gets()[-1]
        assert denied["hub.mode"] == "denied"
        assert "too many subscriptions for this topic" in denied["hub.reason"]
        assert refusals(caplog) == ["websub_max_per_topic"]
        # Another feed URL of the topic has room; the first two may renew.
        for data in (
            form(client, subscriber.url("/c"), "atom"),
            form(client, subscriber.url("/a")),
        ):
            before = len(subscriber.gets())
            assert (await hub_post(client, data))[0] == 202
            await subscriber.wait_for(lambda n=before: len(subscriber.gets()) > n, timeout=5)  # type: ignore[misc]
            assert subscriber.gets()[-1]["hub.mode"] == "subscribe"
        # Query strings would make endless "other" feed URLs of one topic.
        data = form(client, subscriber.url("/d"))
        status, text = await hub_post(client, {**data, "hub.topic": data["hub.topic"] + "?x=1"})
        assert status == 400 and "query" in text
    finally:
        await subscriber.close()


class CountingStorage:
    """The real storage, counting which verbs are called."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if callable(value):
            self.calls[name] += 1
        return value


async def test_the_host_count_is_an_index_look_up(
    start_server: ServerFactory, tokens: dict[str, str], store: Storage
) -> None:
    """3,000 stored subscriptions: a verification reads none of them."""
    expires = utcnow() + timedelta(days=1)
    topic_url = "http://127.0.0.1:1/feeds/liver-health.rss"
    await asyncio.gather(
        *(
            store.create_subscription(
                id=f"ws-{i:05}",
                kind="websub",
                url=f"http://h{i % 1000}.example/cb{i}",
                topics=[TOPIC],
                events=[],
                secret=None,
                lease_expires_at=expires,
                topic_url=topic_url,
            )
            for i in range(3000)
        )
    )
    assert await store.count_websub_subscriptions(host="h7.example") == 3
    assert await store.count_websub_subscriptions(topic_url=topic_url) == 3000
    assert await store.count_websub_subscriptions(host="H7.example", topic_url="x") == 0
    counting = CountingStorage(store)
    client = await start_hub(start_server, tokens, storage=counting)
    subscriber = Subscriber()
    await subscriber.start()
    try:
        started = time.monotonic()
        for i in range(10):
            assert (await hub_post(client, form(client, subscriber.url(f"/cb{i}"))))[0] == 202
        await subscriber.wait_for(lambda: len(subscriber.gets()) == 10, timeout=5)
        took = time.monotonic() - started
    finally:
        await subscriber.close()
    assert counting.calls["list_subscriptions"] == 0, "no verification lists subscriptions"
    assert counting.calls["count_websub_subscriptions"] >= 10
    assert took < 3, f"10 verifications took {took:.1f} s"


async def test_sqlite_counts_search_an_index(tmp_path: Any) -> None:
    import sqlite3

    from storage import open_storage
    from storage.sqlite import Q

    store = await open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await store.close()
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    try:
        for name in Q:
            if not name.startswith("count_websub_subscriptions_"):
                continue
            params = {"owner_key": "callback:x", "topic_url": None}
            plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + Q[name], params))
            assert plan.startswith("SEARCH"), f"{name}: {plan}"
        assert (
            "count_websub_subscriptions_of_owner" in Q
            and "count_websub_subscriptions_of_topic" in Q
        )
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("callback", "domain"),
    [
        ("https://a.b.example.co.uk/cb", "example.co.uk"),
        ("https://Hooks.Example.COM./cb", "example.com"),
        ("https://alice.github.io/cb", "alice.github.io"),
        ("http://localhost:8080/cb", "localhost"),
        ("http://203.0.113.9/cb", "203.0.113.9"),
        ("http://[2001:db8:1:2:aaaa::1]/cb", "2001:db8:1:2::/64"),
        ("http://[2001:db8:1:2:bbbb::7]:81/cb", "2001:db8:1:2::/64"),
        ("http://[::ffff:198.51.100.1]/cb", "198.51.100.1"),
    ],
)
def test_callback_domains(callback: str, domain: str) -> None:
    from syndicate.delivery.websub import callback_domain

    assert callback_domain(callback) == domain


async def test_sqlite_writes_go_on_once_the_wal_is_past_the_inline_checkpoint(
    tmp_path: Any,
) -> None:
    """Under the hub attack the WAL grew past INLINE_CHECKPOINT_FRAMES; from then on
    each subscription or delivery write checkpointed inline and left the PRAGMA's
    cursor open on the writer, and every article write after it failed ("cannot
    commit transaction - SQL statements in progress": 503) until a restart."""
    from storage import open_storage
    from storage.records import ArticleDraft

    store = await open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        checkpointer = store._checkpointer  # type: ignore[attr-defined]
        assert checkpointer is not None
        checkpointer._inline_frames = 1  # as if the WAL held 32,000 pages: no 128 MB write
        for i in range(3):
            await store.create_subscription(
                id=f"ws-{i}",
                kind="websub",
                url=f"http://h{i}.example/cb",
                topics=[TOPIC],
                events=[],
                secret=None,
                lease_expires_at=utcnow() + timedelta(days=1),
                topic_url="http://127.0.0.1:1/feeds/liver-health.rss",
            )
            draft = ArticleDraft(
                id=f"a{i}",
                guid=f"tag:example.org,2026:article/a{i}",
                slug=f"a{i}",
                title="Liver news",
                summary="s",
                content="<p>x</p>",
                content_type="html",
                topics=(TOPIC,),
                published_at=utcnow(),
            )
            await store.put_article(draft)
        assert len(await store.list_articles(topic=None, limit=10)) == 3
    finally:
        await store.close()


async def test_publish_is_once_per_feed_per_interval(
    start_server: ServerFactory, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone may ask the hub to publish, and one request sends to every subscriber
    of the feed: it cannot be repeated into a flood."""
    client = await start_hub(start_server, tokens)
    feed = f"{client.base_url}/feeds/{TOPIC}.rss"
    assert (await hub_post(client, {"hub.mode": "publish", "hub.url": feed}))[0] == 202
    with caplog.at_level(logging.WARNING, logger="syndicate.websub"):
        status, _, retry_after = await post_from(
            client, "127.0.0.2", {"hub.mode": "publish", "hub.url": feed}
        )
    assert status == 429
    assert 0 < int(retry_after) <= 60
    assert refusals(caplog) == ["publish_interval"]
    atom = feed.replace(".rss", ".atom")
    assert (await hub_post(client, {"hub.mode": "publish", "hub.url": atom}))[0] == 202
