"""Status pages against real servers on 127.0.0.1, on both backends: a partner's
webhook (GET /api/subscriptions/{id}/status) and a WebSub pair (GET /hub/status,
HTML and JSON). Neither ever shows a secret."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Client, ServerFactory, error_fields, expect_problem
from receiver import Receiver, respond_with
from test_delivery import ARTICLE, FAST, subscribe, verify
from test_websub import Subscriber, hub_post

from storage import Storage
from syndicate.web.auth import create_token

JSON = {"Accept": "application/json"}
SECRET = "hub-s3cret-never-shown"


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    """Poll ``check`` (a read of the service) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            assert result, "timed out waiting"
            return result
        await asyncio.sleep(0.02)


@pytest.fixture
async def service(start_server: ServerFactory, tokens: dict[str, str]) -> Client:
    # Retries an hour away: the test makes the retry itself (POST .../retry).
    client = await start_server(**{**FAST, "retry_schedule": (3600.0,)})
    client.token = tokens["operator"]
    async with client.request("PUT", "/api/topics/liver-health", json={}) as resp:
        assert resp.status in (200, 201)
    return client


async def status_of(client: Client, sub_id: str, token: str) -> dict[str, Any]:
    async with client.request("GET", f"/api/subscriptions/{sub_id}/status", token=token) as resp:
        assert resp.status == 200, await resp.text()
        text = await resp.text()
        body: dict[str, Any] = await resp.json()
    body["_text"] = text
    return body


def near(text: str, expected: datetime, slack: timedelta = timedelta(minutes=1)) -> bool:
    return abs(datetime.fromisoformat(text) - expected) < slack


async def test_a_failing_then_recovering_webhook_shows_its_attempts(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    partner = tokens["partner"]
    receiver.behaviours["/flaky"] = respond_with(503, 200)
    sub = await subscribe(service, partner, receiver.url("/flaky"))
    fresh = await status_of(service, sub["id"], partner)
    assert fresh["state"] == "active" and fresh["recent_attempts"] == []
    assert fresh["last_day"] == {
        "attempts": 0,
        "succeeded": 0,
        "success_rate": None,
        "latency_ms": {"p50": None, "p99": None},
    }
    assert fresh["next_attempt_at"] is None and fresh["failing_since"] is None

    async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
        assert resp.status == 201
    failing = await until(
        lambda: _with_attempts(service, sub["id"], partner, 1),
    )
    now = datetime.now(UTC)
    assert near(failing["failing_since"], now) and failing["last_success_at"] is None
    assert near(failing["next_attempt_at"], now + timedelta(hours=1), timedelta(minutes=15))
    (attempt,) = failing["recent_attempts"]
    message_id = receiver.at("/flaky")[0].message_id
    assert attempt["event_id"] == message_id
    assert (attempt["status_code"], attempt["outcome"], attempt["succeeded"]) == (
        503,
        "failed",
        False,
    )
    assert attempt["error"] == "HTTP 503" and attempt["latency_ms"] > 0
    assert failing["last_day"]["success_rate"] == 0.0

    # The retry, made now, succeeds.
    async with service.request("GET", f"/api/subscriptions/{sub['id']}/deliveries") as resp:
        (delivery,) = (await resp.json())["deliveries"]
    retry = f"/api/subscriptions/{sub['id']}/deliveries/{delivery['id']}/retry"
    async with service.request("POST", retry, token=partner) as resp:
        assert resp.status == 202
    recovered = await until(lambda: _with_attempts(service, sub["id"], partner, 2))
    verify(sub["secret"], receiver.at("/flaky")[1])
    assert recovered["failing_since"] is None and near(recovered["last_success_at"], now)
    assert recovered["next_attempt_at"] is None, "nothing left to try"
    newest, oldest = recovered["recent_attempts"]
    assert (newest["status_code"], newest["outcome"], newest["succeeded"]) == (
        200,
        "delivered",
        True,
    )
    assert newest["event_id"] == oldest["event_id"] == message_id and newest["error"] is None
    assert newest["attempted_at"] > oldest["attempted_at"]
    day = recovered["last_day"]
    assert (day["attempts"], day["succeeded"], day["success_rate"]) == (2, 1, 0.5)
    latencies = sorted(a["latency_ms"] for a in recovered["recent_attempts"])
    assert day["latency_ms"] == {"p50": round(latencies[0], 3), "p99": round(latencies[1], 3)}
    assert sub["secret"] not in recovered["_text"] and "answer 200" not in recovered["_text"]


async def _with_attempts(
    client: Client, sub_id: str, token: str, count: int
) -> dict[str, Any] | None:
    status = await status_of(client, sub_id, token)
    return status if len(status["recent_attempts"]) == count else None


async def test_a_partner_sees_only_its_own_status(
    service: Client, receiver: Receiver, tokens: dict[str, str], store: Storage
) -> None:
    sub = await subscribe(service, tokens["partner"], receiver.url("/mine"))
    other, _ = await create_token(store, name="other-partner", role="partner")
    path = f"/api/subscriptions/{sub['id']}/status"
    async with service.request("GET", path, token=other) as resp:
        body = await expect_problem(resp, 404)
    assert sub["id"] in body["detail"]
    async with service.request("GET", "/api/subscriptions/sub_nope/status") as resp:
        await expect_problem(resp, 404)
    async with service.request("GET", path, token="") as resp:
        await expect_problem(resp, 401)
    async with service.request("GET", path + "?limit=5") as resp:
        assert "limit" in error_fields(await expect_problem(resp, 422))
    operator = await status_of(service, sub["id"], tokens["operator"])
    assert operator["id"] == sub["id"]


# -- GET /hub/status ------------------------------------------------------------------


@pytest.fixture
async def subscriber() -> Any:
    s = Subscriber()
    await s.start()
    yield s
    await s.close()


async def hub_status(
    client: Client, topic: str, callback: str, *, accept: str = "application/json"
) -> tuple[int, str, str]:
    params = {"hub.topic": topic, "hub.callback": callback}
    async with client.session.get(
        client.url("/hub/status"), params=params, headers={"Accept": accept}
    ) as resp:
        return resp.status, resp.content_type, await resp.text()


async def hub_status_json(client: Client, topic: str, callback: str) -> dict[str, Any] | None:
    status, _, _ = await hub_status(client, topic, callback)
    if status != 200:
        return None
    async with client.session.get(
        client.url("/hub/status"),
        params={"hub.topic": topic, "hub.callback": callback},
        headers=JSON,
    ) as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def request_subscription(
    client: Client, subscriber: Subscriber, callback: str, topic: str, **extra: str
) -> None:
    form = {"hub.mode": "subscribe", "hub.topic": topic, "hub.callback": callback, **extra}
    status, text = await hub_post(client, form)
    assert status == 202, text


async def test_hub_status_of_a_verified_subscription(
    service: Client, subscriber: Subscriber
) -> None:
    topic = f"{service.base_url}/feeds/liver-health.atom"
    callback = subscriber.url("/cb?token=abc")
    await request_subscription(
        service, subscriber, callback, topic, **{"hub.secret": SECRET, "hub.lease_seconds": "3600"}
    )

    async def verified() -> dict[str, Any] | None:
        body = await hub_status_json(service, topic, callback)
        confirmed = body and body["last_verification"]["result"] == "confirmed"
        return body if confirmed else None

    status = await until(verified)
    assert status["state"] == "active" and status["secret_set"] is True
    now = datetime.now(UTC)
    assert near(status["lease_expires_at"], now + timedelta(hours=1))
    verification = status["last_verification"]
    assert (verification["mode"], verification["result"]) == ("subscribe", "confirmed")
    assert near(verification["verified_at"], now)
    assert status["recent_attempts"] == []

    async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
        assert resp.status == 201
    await subscriber.wait_for(lambda: subscriber.posts())

    async def notified() -> dict[str, Any] | None:
        body = await hub_status_json(service, topic, callback)
        return body if body and body["recent_attempts"] else None

    status = await until(notified)
    (attempt,) = status["recent_attempts"]
    assert (attempt["status_code"], attempt["outcome"], attempt["succeeded"]) == (
        204,
        "delivered",
        True,
    )
    assert attempt["event_id"].startswith("msg_") and attempt["latency_ms"] > 0

    code, content_type, html = await hub_status(service, topic, callback, accept="text/html")
    assert (code, content_type) == (200, "text/html")
    for shown in ("WebSub subscription status", "active", "confirmed", "204", "delivered"):
        assert shown in html, shown
    assert "yes (a secret is set)" in html
    _, _, as_json = await hub_status(service, topic, callback)
    for page in (html, as_json):
        assert SECRET not in page
    # curl's default Accept (*/*) and browsers get the page.
    assert (await hub_status(service, topic, callback, accept="*/*"))[1] == "text/html"


async def test_hub_status_of_a_failed_verification(service: Client, subscriber: Subscriber) -> None:
    topic = f"{service.base_url}/feeds/liver-health.rss"
    subscriber.verify_answer = "wrong"
    callback = subscriber.url("/wrong")
    await request_subscription(service, subscriber, callback, topic, **{"hub.secret": SECRET})
    status = await until(lambda: hub_status_json(service, topic, callback))
    assert (status["subscribed"], status["state"]) == (False, "unsubscribed")
    assert status["secret_set"] is False and status["lease_expires_at"] is None
    verification = status["last_verification"]
    assert (verification["mode"], verification["result"]) == ("subscribe", "not_confirmed")
    assert "without echoing hub.challenge" in verification["detail"]
    assert "200" in verification["detail"]

    subscriber.verify_answer = "404"
    other = subscriber.url("/gone")
    await request_subscription(service, subscriber, other, topic)
    status = await until(lambda: hub_status_json(service, topic, other))
    assert status["last_verification"]["detail"] == "answered HTTP 404"
    code, _, html = await hub_status(service, topic, other, accept="text/html")
    assert code == 200 and "not_confirmed" in html and "answered HTTP 404" in html
    assert SECRET not in html


async def test_hub_status_bad_parameters_and_unknown_pairs(service: Client) -> None:
    topic = f"{service.base_url}/feeds/liver-health.atom"
    callback = "https://sub.example.org/cb"
    cases = [
        ({"hub.callback": callback}, "hub.topic"),
        (
            {"hub.topic": "https://elsewhere.example/feed.xml", "hub.callback": callback},
            "hub.topic",
        ),
        ({"hub.topic": topic}, "hub.callback"),
        ({"hub.topic": topic, "hub.callback": "ftp://sub.example.org/cb"}, "hub.callback"),
        ({"hub.topic": topic, "hub.callback": "https://x.example/\x00"}, "hub.callback"),
    ]
    for params, field in cases:
        async with service.session.get(
            service.url("/hub/status"), params=params, headers=JSON
        ) as resp:
            body = await expect_problem(resp, 400)
        assert error_fields(body) == {field} and field in body["detail"], params
        async with service.session.get(service.url("/hub/status"), params=params) as resp:
            assert resp.status == 400 and resp.content_type == "text/html"
            assert field in await resp.text()
    params = {"hub.topic": topic, "hub.callback": callback}
    async with service.session.get(service.url("/hub/status"), params=params, headers=JSON) as resp:
        await expect_problem(resp, 404)
    async with service.session.get(service.url("/hub/status"), params=params) as resp:
        assert resp.status == 404 and resp.content_type == "text/html"
        assert resp.headers["Cache-Control"] == "no-store"


async def test_hub_status_escapes_what_subscribers_sent(
    service: Client, subscriber: Subscriber
) -> None:
    topic = f"{service.base_url}/feeds/liver-health.json"
    markup = "<script>alert(1)</script>"
    callback = subscriber.url("/cb") + f"?x={markup}&y=\"'&z=<b>"
    await request_subscription(service, subscriber, callback, topic)

    async def page() -> str | None:
        code, _, html = await hub_status(service, topic, callback, accept="text/html")
        return html if code == 200 and "confirmed" in html else None

    html = await until(page)
    assert markup not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;" in html and "&#34;&#39;" in html
