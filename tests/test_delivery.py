"""Webhook delivery end to end: a real service, real partner servers on 127.0.0.1,
signatures checked with the standardwebhooks package. Runs on both backends."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from conftest import Client, ServerFactory, expect_problem
from receiver import Receiver, hang, respond_with
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from storage import Storage
from syndicate.delivery.sender import parse_retry_after

ARTICLE = {
    "id": "liver-1",
    "title": "Fatty liver",
    "content": "<p>About the liver.</p>",
    "topics": ["liver-health"],
    "published_at": "2026-11-20T08:00:00Z",
}
FAST = {
    "allow_private_targets": True,
    "retry_schedule": (0.2, 0.2, 0.2),
    "delivery_timeout": 2.0,
    "delivery_connect_timeout": 1.0,
}


@pytest.fixture
async def service(start_server: ServerFactory, tokens: dict[str, str]) -> Client:
    client = await start_server(**FAST)
    client.token = tokens["operator"]
    return client


async def subscribe(
    client: Client, token: str, url: str, topics: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    body = {"url": url, "topics": topics or ["liver-health"], **extra}
    async with client.request("POST", "/api/subscriptions", json=body, token=token) as resp:
        assert resp.status == 201, await resp.text()
        data: dict[str, Any] = await resp.json()
    return data


def verify(secret: str, request: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


async def test_partner_receives_a_verifiable_push(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    liver = await subscribe(service, tokens["partner"], receiver.url("/liver"))
    other = await subscribe(service, tokens["partner"], receiver.url("/other"), ["diabetes"])
    everything = await subscribe(service, tokens["partner"], receiver.url("/all"), ["*"])
    deletes = await subscribe(
        service, tokens["partner"], receiver.url("/deletes"), ["*"], events=["article.deleted"]
    )
    assert liver["secret"].startswith("whsec_")
    async with service.request(
        "GET", f"/api/subscriptions/{liver['id']}", token=tokens["partner"]
    ) as resp:
        assert "secret" not in await resp.json(), "the secret is shown once"

    loop = asyncio.get_running_loop()
    posted_at = loop.time()
    async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
        assert resp.status == 201
    async with service.request("GET", "/api/articles/liver-1") as resp:
        article = await resp.json()
    await receiver.wait_for(lambda: receiver.at("/liver") and receiver.at("/all"))
    first = receiver.at("/liver")[0]
    assert first.at - posted_at < 2.0
    payload = verify(liver["secret"], first)
    assert payload["type"] == "article.published"
    assert payload["data"] == article
    datetime.fromisoformat(payload["timestamp"])
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["User-Agent"].startswith("Syndicate")
    assert verify(everything["secret"], receiver.at("/all")[0])["data"]["id"] == "liver-1"
    with pytest.raises(WebhookVerificationError):
        verify(other["secret"], first)

    changed = {**ARTICLE, "title": "Fatty liver, revised"}
    async with service.request("PUT", "/api/articles/liver-1", json=changed) as resp:
        assert resp.status == 200
    async with service.request("DELETE", "/api/articles/liver-1") as resp:
        assert resp.status == 204
    await receiver.wait_for(lambda: len(receiver.at("/liver")) == 3 and receiver.at("/deletes"))
    types = [verify(liver["secret"], r)["type"] for r in receiver.at("/liver")]
    assert types == ["article.published", "article.updated", "article.deleted"]
    deleted = verify(deletes["secret"], receiver.at("/deletes")[0])
    assert deleted["type"] == "article.deleted"
    assert set(deleted["data"]) == {"id", "guid", "topics", "deleted_at"}
    assert len(receiver.at("/deletes")) == 1, "event filter: only deletions"
    await asyncio.sleep(0.3)
    assert receiver.at("/other") == [], "topic filter: nothing for diabetes"
    ids = [r.message_id for r in receiver.at("/liver")]
    assert len(set(ids)) == 3


async def test_failure_then_success_keeps_the_webhook_id(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    receiver.behaviours["/flaky"] = respond_with(500, 200)
    sub = await subscribe(service, tokens["partner"], receiver.url("/flaky"))
    async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
        assert resp.status == 201
    await receiver.wait_for(lambda: len(receiver.at("/flaky")) == 2)
    first, second = receiver.at("/flaky")
    assert first.message_id == second.message_id
    verify(sub["secret"], second)
    await asyncio.sleep(0.2)
    path = f"/api/subscriptions/{sub['id']}/deliveries"
    async with service.request("GET", path, token=tokens["partner"]) as resp:
        deliveries = (await resp.json())["deliveries"]
    assert len(deliveries) == 1
    log = deliveries[0]
    assert (log["status"], log["attempts"], log["last_status_code"]) == ("delivered", 2, 200)
    assert log["message_id"] == first.message_id
    assert log["last_latency_ms"] > 0 and log["delivered_at"]


async def test_a_binary_answer_is_recorded_not_lost(
    start_server: ServerFactory, receiver: Receiver, tokens: dict[str, str]
) -> None:
    # A partner answering with bytes no database text can hold (NUL, invalid UTF-8):
    # the outcome is still recorded, with the whole body shown readably.
    service = await start_server(**{**FAST, "retry_schedule": (60.0,)})
    service.token = tokens["operator"]

    async def binary(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, body=b"bad\x00gateway \xff\xfe end")

    receiver.behaviours["/binary"] = binary
    sub = await subscribe(service, tokens["partner"], receiver.url("/binary"))
    async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
        assert resp.status == 201
    await receiver.wait_for(lambda: len(receiver.at("/binary")) == 1)
    path = f"/api/subscriptions/{sub['id']}/deliveries"
    log: dict[str, Any] = {}
    for _ in range(100):
        async with service.request("GET", path, token=tokens["partner"]) as resp:
            log = (await resp.json())["deliveries"][0]
        if log["attempts"]:
            break
        await asyncio.sleep(0.05)
    assert (log["status"], log["attempts"], log["last_status_code"]) == ("failed", 1, 500)
    assert log["last_response_body"] == "bad\ufffdgateway \ufffd\ufffd end"


async def test_a_hanging_partner_does_not_hold_back_others(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    slow = Receiver()
    await slow.start()
    try:
        slow.behaviours["/hang"] = hang(30)
        await subscribe(
            service, tokens["partner"], slow.url("/hang").replace("127.0.0.1", "localhost")
        )
        await subscribe(service, tokens["partner"], receiver.url("/fast"))
        for n in range(5):
            article = {**ARTICLE, "id": f"a{n}"}
            async with service.request("POST", "/api/articles", json=article) as resp:
                assert resp.status == 201
        await receiver.wait_for(lambda: len(receiver.at("/fast")) == 5, timeout=3)
    finally:
        await slow.close()


async def test_redirects_are_not_followed(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": receiver.url("/elsewhere")})

    receiver.behaviours["/moved"] = redirect
    sub = await subscribe(service, tokens["partner"], receiver.url("/moved"))
    async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
        assert resp.status == 201
    await receiver.wait_for(lambda: len(receiver.at("/moved")) >= 2)
    assert receiver.at("/elsewhere") == []
    path = f"/api/subscriptions/{sub['id']}/deliveries"
    async with service.request("GET", path, token=tokens["partner"]) as resp:
        log = (await resp.json())["deliveries"][0]
    assert log["last_status_code"] == 302 and "redirect" in log["last_error"]


async def test_dead_after_the_schedule_then_retry_and_recover(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    receiver.behaviours["/down"] = respond_with(503)
    sub = await subscribe(service, tokens["partner"], receiver.url("/down"))
    for article_id in ("a1", "a2"):
        async with service.request("POST", "/api/articles", json={**ARTICLE, "id": article_id}):
            pass
    await receiver.wait_for(lambda: len(receiver.at("/down")) == 8, timeout=10)
    base = f"/api/subscriptions/{sub['id']}"

    async def statuses() -> list[str]:
        async with service.request("GET", f"{base}/deliveries", token=tokens["partner"]) as r:
            return [d["status"] for d in (await r.json())["deliveries"]]

    for _ in range(50):
        if await statuses() == ["dead", "dead"]:
            break
        await asyncio.sleep(0.1)
    assert await statuses() == ["dead", "dead"], "1 attempt + 3 retries, then dead"
    async with service.request(
        "GET", f"{base}/deliveries?status=dead", token=tokens["partner"]
    ) as r:
        dead = (await r.json())["deliveries"]
    assert dead[0]["attempts"] == 4 and dead[0]["last_status_code"] == 503

    receiver.behaviours["/down"] = respond_with(200)
    async with service.request(
        "POST", f"{base}/deliveries/{dead[0]['id']}/retry", token=tokens["partner"]
    ) as r:
        assert r.status == 202
    await receiver.wait_for(lambda: len(receiver.at("/down")) == 9)
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    async with service.request(
        "POST", f"{base}/recover", json={"since": since}, token=tokens["partner"]
    ) as r:
        assert r.status == 202
        assert (await r.json())["recovered"] == 1
    await receiver.wait_for(lambda: len(receiver.at("/down")) == 10)
    for _ in range(50):
        if await statuses() == ["delivered", "delivered"]:
            break
        await asyncio.sleep(0.1)
    assert await statuses() == ["delivered", "delivered"]


async def test_disabled_after_failing_too_long_then_reenabled(
    start_server: ServerFactory, receiver: Receiver, tokens: dict[str, str]
) -> None:
    service = await start_server(**{**FAST, "disable_after": 0.3, "retry_schedule": (0.2,) * 10})
    service.token = tokens["operator"]
    receiver.behaviours["/broken"] = respond_with(500)
    sub = await subscribe(service, tokens["partner"], receiver.url("/broken"))
    async with service.request("POST", "/api/articles", json=ARTICLE):
        pass
    path = f"/api/subscriptions/{sub['id']}"
    for _ in range(60):
        async with service.request("GET", path, token=tokens["partner"]) as resp:
            state = await resp.json()
        if state["status"] == "disabled":
            break
        await asyncio.sleep(0.1)
    assert state["status"] == "disabled" and state["failing_since"]
    attempts = len(receiver.at("/broken"))
    await asyncio.sleep(0.6)
    assert len(receiver.at("/broken")) == attempts, "a disabled subscription gets nothing"

    receiver.behaviours["/broken"] = respond_with(204)
    async with service.request(
        "PATCH", path, json={"status": "active"}, token=tokens["partner"]
    ) as resp:
        assert (await resp.json())["status"] == "active"
    async with service.request("POST", "/api/articles", json={**ARTICLE, "id": "again"}):
        pass
    await receiver.wait_for(
        lambda: any(json.loads(r.body)["data"]["id"] == "again" for r in receiver.at("/broken"))
    )


async def test_rotated_secret_signs_with_old_and_new(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    sub = await subscribe(service, tokens["partner"], receiver.url("/rot"))
    path = f"/api/subscriptions/{sub['id']}/rotate-secret"
    async with service.request("POST", path, token=tokens["partner"]) as resp:
        assert resp.status == 200
        rotated = await resp.json()
    assert rotated["secret"] != sub["secret"] and rotated["previous_secret_expires_at"]
    async with service.request("POST", "/api/articles", json=ARTICLE):
        pass
    await receiver.wait_for(lambda: receiver.at("/rot"))
    got = receiver.at("/rot")[0]
    assert got.headers["webhook-signature"].count("v1,") == 2
    verify(sub["secret"], got)
    verify(rotated["secret"], got)


async def test_test_endpoint_sends_a_signed_ping(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    sub = await subscribe(service, tokens["partner"], receiver.url("/ping"))
    async with service.request(
        "POST", f"/api/subscriptions/{sub['id']}/test", token=tokens["partner"]
    ) as resp:
        result = await resp.json()
    assert result["delivered"] is True and result["status_code"] == 204
    assert verify(sub["secret"], receiver.at("/ping")[0])["type"] == "ping"


async def test_partners_see_only_their_own(
    service: Client, receiver: Receiver, tokens: dict[str, str], store: Storage
) -> None:
    from syndicate.web.auth import create_token

    other_token, _ = await create_token(store, name="other-partner", role="partner")
    mine = await subscribe(service, tokens["partner"], receiver.url("/mine"))
    theirs = await subscribe(service, other_token, receiver.url("/theirs"))
    async with service.request("GET", "/api/subscriptions", token=tokens["partner"]) as resp:
        assert [s["id"] for s in (await resp.json())["subscriptions"]] == [mine["id"]]
    async with service.request("GET", "/api/subscriptions") as resp:
        assert {s["id"] for s in (await resp.json())["subscriptions"]} == {mine["id"], theirs["id"]}
    for method, suffix, body in [
        ("GET", "", None),
        ("PATCH", "", {"description": "x"}),
        ("DELETE", "", None),
        ("POST", "/rotate-secret", None),
        ("POST", "/test", None),
        ("GET", "/deliveries", None),
        ("POST", "/recover", {"since": "2026-01-01T00:00:00Z"}),
    ]:
        path = f"/api/subscriptions/{theirs['id']}{suffix}"
        async with service.request(method, path, json=body, token=tokens["partner"]) as resp:
            await expect_problem(resp, 404)
    async with service.request(
        "PATCH",
        f"/api/subscriptions/{mine['id']}",
        json={"topics": ["*"], "description": "all of it"},
        token=tokens["partner"],
    ) as resp:
        assert (await resp.json())["topics"] == ["*"]
    async with service.request(
        "DELETE", f"/api/subscriptions/{mine['id']}", token=tokens["partner"]
    ) as resp:
        assert resp.status == 204
    async with service.request(
        "GET", f"/api/subscriptions/{mine['id']}", token=tokens["partner"]
    ) as resp:
        await expect_problem(resp, 404)
    anonymous = {"url": receiver.url("/x"), "topics": ["*"]}
    async with service.request("POST", "/api/subscriptions", token="", json=anonymous) as resp:
        await expect_problem(resp, 401)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://127.0.0.1:9/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest",
        "http://[::ffff:192.168.0.1]/x",
        "ftp://example.org/x",
        "http://user:pw@example.org/x",
    ],
)
async def test_egress_guard_refuses_private_targets(
    start_server: ServerFactory, tokens: dict[str, str], url: str
) -> None:
    client = await start_server(allow_private_targets=False)
    body = {"url": url, "topics": ["*"]}
    async with client.request(
        "POST", "/api/subscriptions", json=body, token=tokens["partner"]
    ) as resp:
        problem = await expect_problem(resp, 422)
    assert problem["errors"][0]["field"] == "url"


async def test_metrics_count_deliveries(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    await subscribe(service, tokens["partner"], receiver.url("/m"))
    async with service.request("POST", "/api/articles", json=ARTICLE):
        pass
    await receiver.wait_for(lambda: receiver.at("/m"))
    text = ""
    for _ in range(30):
        async with service.request("GET", "/metrics", token="") as resp:
            text = await resp.text()
        if 'syndicate_deliveries_total{outcome="delivered"} 1.0' in text:
            break
        await asyncio.sleep(0.1)
    assert 'syndicate_deliveries_total{outcome="delivered"} 1.0' in text
    assert "syndicate_delivery_attempt_seconds_count 1.0" in text
    assert "syndicate_deliveries_pending 0.0" in text
    assert "syndicate_oldest_pending_delivery_age_seconds" in text


async def test_each_host_gets_at_most_its_cap_at_once(
    start_server: ServerFactory, receiver: Receiver, tokens: dict[str, str]
) -> None:
    # The cap as a partner sees it: concurrent requests at its end. (The dispatcher's
    # senders per host and the HTTP client's per-host limit both enforce it.)
    service = await start_server(**FAST, max_per_host=3)
    service.token = tokens["operator"]
    in_flight: dict[str, int] = {"127.0.0.1": 0, "localhost": 0}
    peak = dict(in_flight)
    peak_overall = 0

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal peak_overall
        host = request.host.rsplit(":", 1)[0]
        in_flight[host] += 1
        peak[host] = max(peak[host], in_flight[host])
        peak_overall = max(peak_overall, sum(in_flight.values()))
        await asyncio.sleep(0.05)
        in_flight[host] -= 1
        return web.Response(status=204)

    for n in range(8):
        receiver.behaviours[f"/hook/{n}"] = slow
        url = receiver.url(f"/hook/{n}")
        await subscribe(service, tokens["partner"], url)
        await subscribe(service, tokens["partner"], url.replace("127.0.0.1", "localhost"))
    for n in range(2):
        async with service.request(
            "POST", "/api/articles", json={**ARTICLE, "id": f"c{n}"}
        ) as resp:
            assert resp.status == 201
    await receiver.wait_for(lambda: len(receiver.received) == 32)
    # Each host at its cap, never above it; the two hosts at the same time.
    assert peak == {"127.0.0.1": 3, "localhost": 3}
    assert peak_overall > 3
    sent = {(r.headers["Host"], r.path, r.message_id) for r in receiver.received}
    assert len(sent) == 32 and len({r.message_id for r in receiver.received}) == 2


async def test_a_partner_that_slows_down_hands_back_what_it_cannot_send_soon(
    start_server: ServerFactory, receiver: Receiver, tokens: dict[str, str], store: Storage
) -> None:
    """A fast partner's backlog is claimed ahead of sending, beyond 4 x its cap, so the
    next batch is there before its senders run dry. Once its attempts time out, what
    it holds beyond 4 x its cap goes back to the database at once (no attempt
    counted), not kept claimed through timeout after timeout."""
    service = await start_server(**{**FAST, "delivery_timeout": 1.0}, max_per_host=2)
    service.token = tokens["operator"]
    hanging = False

    async def fast_then_hanging(request: web.Request) -> web.StreamResponse:
        if hanging:
            await asyncio.sleep(30)
        return web.Response(status=204)

    subs = []
    for n in range(30):
        receiver.behaviours[f"/hook/{n}"] = fast_then_hanging
        subs.append(await subscribe(service, tokens["partner"], receiver.url(f"/hook/{n}")))

    async def claimed() -> list[Any]:
        found = []
        for sub in subs:
            found += [d for d in await store.list_deliveries(sub["id"]) if d.claimed_by]
        return found

    async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
        assert resp.status == 201
    await receiver.wait_for(lambda: len(receiver.received) == 30)
    while await claimed():  # their outcomes are written
        await asyncio.sleep(0.05)
    hanging = True
    later = {**ARTICLE, "id": "liver-2", "title": "Fatty liver, part two"}
    async with service.request("POST", "/api/articles", json=later) as resp:
        assert resp.status == 201
    started = asyncio.get_running_loop().time()
    most = 0
    while asyncio.get_running_loop().time() - started < 0.8:  # before any times out
        most = max(most, len(await claimed()))
        await asyncio.sleep(0.05)
    assert most == 30, "the fast partner's whole backlog is claimed ahead"
    while len(held := await claimed()) > 2 * 4:
        assert asyncio.get_running_loop().time() - started < 2.5, len(held)
        await asyncio.sleep(0.05)
    waiting = [d for sub in subs for d in await store.list_deliveries(sub["id"], status="pending")]
    handed_back = [d for d in waiting if not d.claimed_by]
    assert len(handed_back) >= 30 - 2 * 4 - 2
    assert all(d.attempts == 0 for d in handed_back)


def test_retry_after_is_ascii_seconds_or_an_http_date() -> None:
    now = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 7 ", now) == 7.0
    assert parse_retry_after("Fri, 20 Nov 2026 08:01:00 GMT", now) == 60.0
    assert parse_retry_after("Fri, 20 Nov 2026 07:00:00 GMT", now) == 0.0
    # Unicode digits pass str.isdigit() but not float(): ignored, not a crash that
    # would lose the partner's status code.
    assert parse_retry_after("²", now) is None
    assert parse_retry_after("soon", now) is None


async def test_articles_from_before_anyone_subscribed_are_not_pushed_later(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    """With no subscriptions the fan-out passes events over; a partner subscribing
    afterwards gets what is written from then on, and nothing from before."""
    early = {**ARTICLE, "id": "early", "title": "Before anyone subscribed"}
    async with service.request("POST", "/api/articles", json=early) as resp:
        assert resp.status == 201
    await asyncio.sleep(0.5)  # the fan-out, woken by the write, passes it over
    partner = await subscribe(service, tokens["partner"], receiver.url("/late"), ["*"])
    for n in range(3):
        later = {**ARTICLE, "id": f"later-{n}", "title": f"After {n}"}
        async with service.request("POST", "/api/articles", json=later) as resp:
            assert resp.status == 201
    await receiver.wait_for(lambda: len(receiver.at("/late")) >= 3)
    await asyncio.sleep(0.3)
    got = [verify(partner["secret"], r)["data"]["id"] for r in receiver.at("/late")]
    assert sorted(got) == ["later-0", "later-1", "later-2"]
