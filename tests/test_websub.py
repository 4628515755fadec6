"""The WebSub hub against real subscriber servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import feedparser
import pytest
from aiohttp import web
from conftest import Client, ServerFactory
from receiver import Receiver

from storage import Storage

ARTICLE = {"id": "w1", "title": "Liver news", "content": "<p>x</p>", "topics": ["liver-health"]}
FAST = {"allow_private_targets": True, "retry_schedule": (0.1, 0.1), "delivery_timeout": 2.0}


class Subscriber(Receiver):
    """Answers verification GETs by echoing ``hub.challenge`` (or as told)."""

    def __init__(self) -> None:
        super().__init__()
        self.verify_answer: str = "echo"  # echo | wrong | 404 | redirect
        self.post_status = 204

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await super()._handle(request)
        if request.method == "GET":
            challenge = request.query.get("hub.challenge", "")
            if self.verify_answer == "wrong":
                return web.Response(text=challenge + "x")
            if self.verify_answer == "404":
                return web.Response(status=404)
            if self.verify_answer == "redirect":
                return web.Response(status=302, headers={"Location": self.url("/elsewhere")})
            return web.Response(text=challenge)
        if request.method == "POST":
            return web.Response(status=self.post_status)
        return response

    def gets(self) -> list[dict[str, str]]:
        return [
            {k: v[0] for k, v in parse_qs(urlsplit(r.path).query).items()}
            for r in self.received
            if "hub.mode" in r.path
        ]

    def posts(self) -> list[Any]:
        return [r for r in self.received if "hub.mode" not in r.path and r.body]


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    s = Subscriber()
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def hub(start_server: ServerFactory, tokens: dict[str, str]) -> Client:
    client = await start_server(**FAST)
    client.token = tokens["operator"]
    async with client.request("PUT", "/api/topics/liver-health", json={}) as resp:
        assert resp.status in (200, 201)
    return client


async def hub_post(client: Client, form: dict[str, str]) -> tuple[int, str]:
    async with client.request("POST", "/hub", data=form, token="") as resp:
        return resp.status, await resp.text()


async def subscribe(
    client: Client, subscriber: Subscriber, fmt: str = "atom", **extra: str
) -> dict[str, str]:
    topic = f"{client.base_url}/feeds/liver-health.{fmt}"
    form = {
        "hub.mode": "subscribe",
        "hub.topic": topic,
        "hub.callback": subscriber.url("/cb?token=abc"),
        **extra,
    }
    before = len(subscriber.gets())
    status, _ = await hub_post(client, form)
    assert status == 202
    await subscriber.wait_for(lambda: len(subscriber.gets()) > before, timeout=5)
    await asyncio.sleep(0.1)
    return subscriber.gets()[-1]


async def post_article(client: Client, **changes: Any) -> None:
    async with client.request(
        "PUT", f"/api/articles/{changes.get('id', 'w1')}", json={**ARTICLE, **changes}
    ) as resp:
        assert resp.status in (200, 201)


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
async def test_subscribe_verify_and_receive_signed_notifications(
    hub: Client, subscriber: Subscriber, fmt: str
) -> None:
    topic = f"{hub.base_url}/feeds/liver-health.{fmt}"
    check = await subscribe(hub, subscriber, fmt, **{"hub.secret": "s3cret"})
    assert check["hub.mode"] == "subscribe" and check["hub.topic"] == topic
    assert check["hub.lease_seconds"] == "864000"
    assert len(check["hub.challenge"]) >= 32
    assert check["token"] == "abc", "the callback's own query string is kept"

    await post_article(hub)
    await subscriber.wait_for(lambda: subscriber.posts(), timeout=5)
    note = subscriber.posts()[0]
    assert note.path == "/cb?token=abc"
    expected_type = {
        "atom": "application/atom+xml",
        "rss": "application/rss+xml",
        "json": "application/feed+json",
    }[fmt]
    assert note.headers["Content-Type"].startswith(expected_type)
    link = note.headers["Link"]
    assert f'<{hub.base_url}/hub>; rel="hub"' in link
    assert link.count('rel="self"') == 1 and f'<{topic}>; rel="self"' in link
    digest = hmac.new(b"s3cret", note.body, hashlib.sha256).hexdigest()
    assert note.headers["X-Hub-Signature"] == f"sha256={digest}"
    if fmt != "json":
        parsed = feedparser.parse(note.body)
        assert parsed.bozo == 0 and [e.title for e in parsed.entries] == ["Liver news"]
    else:
        assert b'"title":"Liver news"' in note.body


async def test_no_secret_no_signature_and_deletions_send_the_current_feed(
    hub: Client, subscriber: Subscriber
) -> None:
    await subscribe(hub, subscriber)
    await post_article(hub)
    await post_article(hub, id="w2", title="Second")
    await subscriber.wait_for(lambda: len(subscriber.posts()) == 2)
    assert "X-Hub-Signature" not in subscriber.posts()[0].headers
    async with hub.request("DELETE", "/api/articles/w1") as resp:
        assert resp.status == 204
    await subscriber.wait_for(lambda: len(subscriber.posts()) == 3)
    parsed = feedparser.parse(subscriber.posts()[2].body)
    assert [e.title for e in parsed.entries] == ["Second"]


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"hub.mode": "follow"}, 400),
        ({"hub.topic": "https://elsewhere.example/feed.xml"}, 400),
        ({"hub.topic": "{base}/feeds/liver-health.xml"}, 400),
        ({"hub.topic": "{base}/feeds/no-such-topic.rss"}, 404),
        ({"hub.callback": "ftp://127.0.0.1/cb"}, 400),
        ({"hub.callback": ""}, 400),
        ({"hub.secret": "x" * 200}, 400),
        ({"hub.callback": "{cb}?x=\x00"}, 400),
        ({"hub.secret": "ab\x00cd"}, 400),
    ],
)
async def test_bad_requests_are_refused_with_a_reason(
    hub: Client, subscriber: Subscriber, form: dict[str, str], status: int
) -> None:
    good = {
        "hub.mode": "subscribe",
        "hub.topic": f"{hub.base_url}/feeds/liver-health.rss",
        "hub.callback": subscriber.url("/cb"),
    }
    form = {
        k: v.replace("{base}", hub.base_url).replace("{cb}", subscriber.url("/cb"))
        for k, v in form.items()
    }
    got, text = await hub_post(hub, {**good, **form})
    assert got == status and text.strip()
    await asyncio.sleep(0.2)
    assert subscriber.gets() == [], "nothing is verified after a refusal"


async def test_form_and_guard_checks(
    start_server: ServerFactory, subscriber: Subscriber, tokens: dict[str, str]
) -> None:
    client = await start_server(allow_private_targets=False)
    async with client.request(
        "PUT", "/api/topics/liver-health", json={}, token=tokens["operator"]
    ) as resp:
        assert resp.status == 201
    form = {
        "hub.mode": "subscribe",
        "hub.topic": f"{client.base_url}/feeds/liver-health.rss",
        "hub.callback": subscriber.url("/cb"),
    }
    status, text = await hub_post(client, form)
    assert status == 400 and "refused" in text
    async with client.request("POST", "/hub", json=form, token="") as resp:
        assert resp.status == 415
    status, _ = await hub_post(
        client, {**form, "hub.unknown": "ignored", "hub.callback": "https://93.184.216.34/cb"}
    )
    assert status == 202, "unknown parameters are ignored"


@pytest.mark.parametrize("answer", ["wrong", "404", "redirect"])
async def test_failed_verification_subscribes_nothing(
    hub: Client, subscriber: Subscriber, store: Storage, answer: str
) -> None:
    subscriber.verify_answer = answer
    await subscribe(hub, subscriber)
    await asyncio.sleep(0.3)
    assert await store.list_subscriptions(kind="websub") == []
    await post_article(hub)
    await asyncio.sleep(0.5)
    assert subscriber.posts() == []
    assert subscriber.at("/elsewhere") == []


async def test_resubscription_keeps_old_state_until_verified(
    hub: Client, subscriber: Subscriber, store: Storage
) -> None:
    await subscribe(hub, subscriber, **{"hub.secret": "old"})
    subscriber.verify_answer = "wrong"
    await subscribe(hub, subscriber, **{"hub.secret": "new"})
    await asyncio.sleep(0.2)
    await post_article(hub)
    await subscriber.wait_for(lambda: subscriber.posts())
    note = subscriber.posts()[0]
    assert (
        note.headers["X-Hub-Signature"]
        == "sha256=" + hmac.new(b"old", note.body, hashlib.sha256).hexdigest()
    )
    subscriber.verify_answer = "echo"
    await subscribe(hub, subscriber, **{"hub.secret": "new"})
    await post_article(hub, title="Again")
    await subscriber.wait_for(lambda: len(subscriber.posts()) == 2)
    note = subscriber.posts()[1]
    assert (
        note.headers["X-Hub-Signature"]
        == "sha256=" + hmac.new(b"new", note.body, hashlib.sha256).hexdigest()
    )
    assert len(await store.list_subscriptions(kind="websub")) == 1


async def test_unsubscribe_after_verification_only(
    hub: Client, subscriber: Subscriber, store: Storage
) -> None:
    await subscribe(hub, subscriber)
    form = {
        "hub.mode": "unsubscribe",
        "hub.topic": f"{hub.base_url}/feeds/liver-health.atom",
        "hub.callback": subscriber.url("/cb?token=abc"),
    }
    subscriber.verify_answer = "wrong"
    assert (await hub_post(hub, form))[0] == 202
    await subscriber.wait_for(lambda: subscriber.gets()[-1]["hub.mode"] == "unsubscribe")
    await asyncio.sleep(0.2)
    assert len(await store.list_subscriptions(kind="websub")) == 1
    subscriber.verify_answer = "echo"
    before = len(subscriber.gets())
    assert (await hub_post(hub, form))[0] == 202
    await subscriber.wait_for(lambda: len(subscriber.gets()) > before)
    assert "hub.lease_seconds" not in subscriber.gets()[-1]
    for _ in range(20):
        if not await store.list_subscriptions(kind="websub"):
            break
        await asyncio.sleep(0.1)
    assert await store.list_subscriptions(kind="websub") == []
    await post_article(hub)
    await asyncio.sleep(0.5)
    assert subscriber.posts() == []


async def test_leases_are_clamped_and_expire(
    start_server: ServerFactory, subscriber: Subscriber, tokens: dict[str, str]
) -> None:
    client = await start_server(
        **FAST, websub_lease_min=1, websub_lease_default=50, websub_lease_max=100
    )
    client.token = tokens["operator"]
    async with client.request("PUT", "/api/topics/liver-health", json={}) as resp:
        assert resp.status == 201
    check = await subscribe(client, subscriber, **{"hub.lease_seconds": "999999"})
    assert check["hub.lease_seconds"] == "100"
    check = await subscribe(client, subscriber, **{"hub.lease_seconds": "1"})
    assert check["hub.lease_seconds"] == "1"
    await asyncio.sleep(1.2)
    await post_article(client)
    await asyncio.sleep(0.6)
    assert subscriber.posts() == [], "an expired subscription receives nothing"


async def test_default_clamps(hub: Client, subscriber: Subscriber) -> None:
    check = await subscribe(hub, subscriber, **{"hub.lease_seconds": "10"})
    assert check["hub.lease_seconds"] == "3600"
    check = await subscribe(hub, subscriber, **{"hub.lease_seconds": "99999999"})
    assert check["hub.lease_seconds"] == "2592000"


async def test_410_ends_the_subscription_other_failures_keep_it(
    hub: Client, subscriber: Subscriber, store: Storage
) -> None:
    await subscribe(hub, subscriber)
    subscriber.post_status = 500
    await post_article(hub)
    await subscriber.wait_for(lambda: len(subscriber.posts()) == 3, timeout=5)
    await asyncio.sleep(0.3)
    subs = await store.list_subscriptions(kind="websub")
    assert len(subs) == 1 and subs[0].status == "active", "giving up keeps the subscription"
    subscriber.post_status = 410
    await post_article(hub, title="Gone?")
    await subscriber.wait_for(lambda: len(subscriber.posts()) == 4)
    for _ in range(20):
        if not await store.list_subscriptions(kind="websub"):
            break
        await asyncio.sleep(0.1)
    assert await store.list_subscriptions(kind="websub") == []
    await post_article(hub, title="After 410")
    await asyncio.sleep(0.5)
    assert len(subscriber.posts()) == 4


async def test_publish_ping_notifies_subscribers(hub: Client, subscriber: Subscriber) -> None:
    await post_article(hub)
    await subscribe(hub, subscriber, "rss")
    feed = f"{hub.base_url}/feeds/liver-health.rss"
    status, _ = await hub_post(hub, {"hub.mode": "publish", "hub.url": feed})
    assert status == 202
    await subscriber.wait_for(lambda: subscriber.posts())
    parsed = feedparser.parse(subscriber.posts()[0].body)
    assert [e.title for e in parsed.entries] == ["Liver news"]
    status, _ = await hub_post(hub, {"hub.mode": "publish", "hub.url": "https://x.example/f"})
    assert status == 400


async def test_denial_when_a_callback_host_has_too_many(
    start_server: ServerFactory, subscriber: Subscriber, tokens: dict[str, str]
) -> None:
    client = await start_server(**FAST, websub_max_per_host=1)
    client.token = tokens["operator"]
    for topic in ("liver-health", "diet"):
        async with client.request("PUT", f"/api/topics/{topic}", json={}) as resp:
            assert resp.status == 201
    await subscribe(client, subscriber)
    form = {
        "hub.mode": "subscribe",
        "hub.topic": f"{client.base_url}/feeds/diet.rss",
        "hub.callback": subscriber.url("/cb2"),
    }
    assert (await hub_post(client, form))[0] == 202
    await subscriber.wait_for(lambda: subscriber.gets()[-1]["hub.mode"] == "denied")
    denied = subscriber.gets()[-1]
    assert denied["hub.topic"] == f"{client.base_url}/feeds/diet.rss"
    assert "too many" in denied["hub.reason"]
