"""Trying to break it: every route against every kind of caller, a catalogue of bad
input, partners that misbehave, floods. Nothing is lost and no one is let in."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import feedparser
import pytest
from conftest import Client, ServerFactory, expect_problem
from receiver import Receiver

from storage import Storage
from syndicate.web.auth import create_token
from syndicate.web.openapi import ROUTES

ARTICLE = {"id": "a1", "title": "Liver", "content": "<p>x</p>", "topics": ["liver-health"]}


@pytest.fixture
async def client(start_server: ServerFactory, tokens: dict[str, str]) -> Client:
    """The service with the egress guard open: partners here live on 127.0.0.1."""
    c = await start_server(allow_private_targets=True)
    c.token = tokens["operator"]
    return c


@pytest.fixture
async def world(
    client: Client, store: Storage, tokens: dict[str, str], seed_article: dict[str, Any]
) -> dict[str, Any]:
    """An article, a partner subscription with one delivery, and another partner."""
    body = {"url": "http://127.0.0.1:9/hook", "topics": ["*"]}
    async with client.request(
        "POST", "/api/subscriptions", json=body, token=tokens["partner"]
    ) as resp:
        sub = await resp.json()
    async with client.request("PUT", "/api/articles/liver-calcification", json=seed_article):
        pass
    delivery_id = 0
    for _ in range(50):
        deliveries = await store.list_deliveries(sub["id"])
        if deliveries:
            delivery_id = deliveries[0].id
            break
        await asyncio.sleep(0.05)
    other, _ = await create_token(store, name="other-partner", role="partner")
    revoked, _ = await create_token(store, name="revoked-op", role="operator")
    await store.revoke_token("revoked-op")
    return {"sub": sub["id"], "delivery": delivery_id, "other": other, "revoked": revoked}


def fill(path: str, world: dict[str, Any]) -> str:
    return (
        path.replace("{id}", world["sub"] if "subscriptions" in path else "liver-calcification")
        .replace("{slug}", "liver-health")
        .replace("{delivery_id}", str(world["delivery"]))
    )


SAMPLE_BODIES: dict[str, Any] = {
    "/api/articles": ARTICLE,
    "/api/articles/batch": {"articles": [ARTICLE]},
    "/api/articles/{id}": {**ARTICLE, "id": "liver-calcification"},
    "/api/topics/{slug}": {"title": "Liver"},
    "/api/subscriptions": {"url": "http://127.0.0.1:9/x", "topics": ["*"]},
    "/api/subscriptions/{id}": {"description": "changed"},
    "/api/subscriptions/{id}/recover": {"since": "2026-01-01T00:00:00Z"},
    "/api/portal-links": {"partner": "test-partner"},
}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method.upper()} {r.path}")
async def test_auth_matrix_over_every_route(
    client: Client, world: dict[str, Any], tokens: dict[str, str], route: Any
) -> None:
    path = fill(route.path, world)
    body = SAMPLE_BODIES.get(route.path) if route.body else None
    method = route.method.upper()

    async def call(token: str) -> int:
        async with client.request(method, path, json=body, token=token) as resp:
            if resp.status >= 400:
                await expect_problem(resp, resp.status)
            status: int = resp.status
            return status

    if route.auth == "public":
        assert await call("") == 200
        return
    assert await call("") == 401, "anonymous"
    assert await call(world["revoked"]) == 401, "revoked"
    assert await call("syn_" + "x" * 43) == 401, "unknown token"
    partner = await call(tokens["partner"])
    if route.auth == "operator":
        assert partner == 403
    else:
        assert partner < 400, f"a partner may {method} its own {path}"
    if "{id}" in route.path and "subscriptions" in route.path:
        assert await call(world["other"]) == 404, "another partner's subscription is invisible"
    if method != "DELETE":
        assert await call(tokens["operator"]) < 400


BAD_INPUTS: list[tuple[str, bytes, dict[str, str], int]] = [
    ("truncated json", b'{"title": "x", "content', {}, 400),
    ("malformed json", b"{title: 'x'}", {}, 400),
    ("invalid utf-8", b'{"title": "\xc3\x28"}', {}, 400),
    ("deep nesting", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, {}, 400),
    ("wrong types", json.dumps({**ARTICLE, "title": ["x"], "topics": "liver"}).encode(), {}, 422),
    ("null body", b"null", {}, 422),
    (
        "huge topic list",
        json.dumps({**ARTICLE, "topics": [f"t{n}" for n in range(5000)]}).encode(),
        {},
        422,
    ),
    ("not json", b"title=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ("10 MB body", b'{"title": "' + b"x" * (10 * 1024 * 1024) + b'"}', {}, 413),
]


@pytest.mark.parametrize(
    ("name", "body", "headers", "status"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
async def test_bad_input_catalogue(
    client: Client, store: Storage, name: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    headers = {"Content-Type": "application/json", **headers}
    for path in ("/api/articles", "/api/articles/batch", "/api/articles/x1"):
        method = "PUT" if path.endswith("x1") else "POST"
        data = io.BytesIO(body) if len(body) > 1024 * 1024 else body
        async with client.request(method, path, data=data, headers=headers) as resp:
            if path.endswith("batch") and status == 422:
                assert resp.status == 422, name
                continue
            problem = await expect_problem(resp, status)
            assert problem["request_id"] == resp.headers["X-Request-Id"]
    assert await store.list_events() == []


INJECTIONS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    '<a href="javascript:alert(1)">x</a>',
    "\u202eRTL override\u202c",
    "e\u0301\u0301\u0301 😀👩‍👩‍👧 שלום مرحبا",
    "\u0000\u0007\u001b[31mred",
]


async def test_injection_and_unicode_in_every_text_field_keep_feeds_valid(
    client: Client, store: Storage, seed_article: dict[str, Any]
) -> None:
    async with client.request("PUT", "/api/articles/liver-calcification", json=seed_article):
        pass
    before = await store.get_article("liver-calcification")
    for n, payload in enumerate(INJECTIONS):
        article = {
            "id": f"inj{n}",
            "title": f"T {payload}",
            "content": f"<p>{payload}</p>",
            "summary": payload,
            "author": payload,
            "topics": ["liver-health"],
        }
        async with client.request("POST", "/api/articles", json=article) as resp:
            assert resp.status == 201, (payload, await resp.text())
            stored = await resp.json()
        assert "<script" not in stored["content"] and "onerror" not in stored["content"]
        assert 'href="javascript' not in stored["content"]
        assert "\u0000" not in stored["title"] and "\u001b" not in stored["author"]
    batch = {"articles": [{**ARTICLE, "id": "dup"}, {**ARTICLE, "id": "dup", "title": "2"}]}
    async with client.request("POST", "/api/articles/batch", json=batch) as resp:
        result = await resp.json()
    assert [r["status"] for r in result["results"]] == ["created", "rejected"]
    for query in ("cursor=%00%ff", "cursor=" + "A" * 5000, "limit=-1", "topic=../../etc"):
        async with client.request("GET", f"/api/articles?{query}") as resp:
            await expect_problem(resp, 422)
    for path in (
        "/api/articles/..%2F..%2Fetc%2Fpasswd",
        "/api/articles/%2e%2e",
        "/api/articles/a%00b",
    ):
        async with client.request("GET", path) as resp:
            assert resp.status in (404, 422)
    for fmt in ("rss", "atom", "json"):
        async with client.request("GET", f"/feeds/liver-health.{fmt}", token="") as resp:
            body = await resp.read()
            assert resp.status == 200
        if fmt == "json":
            assert len(json.loads(body)["items"]) == len(INJECTIONS) + 2  # + seed + "dup"
        else:
            parsed = feedparser.parse(body)
            assert parsed.bozo == 0, parsed.get("bozo_exception")
            assert len(parsed.entries) == len(INJECTIONS) + 2
    assert await store.get_article("liver-calcification") == before, "stored data intact"


async def test_partner_and_anonymous_floods_get_429(
    start_server: ServerFactory, tokens: dict[str, str]
) -> None:
    client = await start_server(write_rate=1, write_burst=5, allow_private_targets=True)
    statuses = []
    for _ in range(8):
        body = {"url": "http://127.0.0.1:9/x", "topics": ["*"]}
        async with client.request(
            "POST", "/api/subscriptions", json=body, token=tokens["partner"]
        ) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                problem = await expect_problem(resp, 429)
                assert int(resp.headers["Retry-After"]) >= 1 and "try again" in problem["detail"]
    assert statuses[:5] == [201] * 5 and statuses[-1] == 429
    async with client.request("GET", "/api/subscriptions", token=tokens["partner"]) as resp:
        assert resp.status == 200, "reads are not limited"
    async with client.request(
        "POST", "/api/articles", json=ARTICLE, token=tokens["operator"]
    ) as resp:
        assert resp.status == 201, "operators are not limited"
    hub = []
    for _ in range(8):
        async with client.request("POST", "/hub", data={"hub.mode": "x"}, token="") as resp:
            hub.append(resp.status)
    assert hub[-1] == 429, "the hub shares the address's budget"
    guesses = []
    for n in range(8):
        async with client.request("GET", "/api/topics", token=f"syn_guess{n}") as resp:
            guesses.append(resp.status)
    assert guesses[-1] == 429, "token guessing is slowed down"


async def test_subscription_cap_per_partner(
    start_server: ServerFactory, tokens: dict[str, str]
) -> None:
    client = await start_server(max_subscriptions=2, allow_private_targets=True)
    statuses = []
    for _ in range(3):
        body = {"url": "http://127.0.0.1:9/x", "topics": ["*"]}
        async with client.request(
            "POST", "/api/subscriptions", json=body, token=tokens["partner"]
        ) as resp:
            statuses.append(resp.status)
    assert statuses == [201, 201, 409]


async def test_request_ids_and_security_headers(client: Client) -> None:
    async with client.request(
        "GET", "/api/articles/nope", headers={"X-Request-Id": "abc-123"}
    ) as resp:
        problem = await expect_problem(resp, 404)
        assert resp.headers["X-Request-Id"] == "abc-123" == problem["request_id"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    async with client.request("GET", "/healthz", headers={"X-Request-Id": "bad id\u00e9"}) as r:
        assert len(r.headers["X-Request-Id"]) == 32, "an unusable id is replaced"
    async with client.request("PUT", "/api/topics/t", json={}) as resp:
        assert resp.status == 201
    for path in ("/feeds/t.rss", "/feeds/t.json", "/api/topics", "/openapi.json", "/"):
        async with client.request("GET", path) as resp:
            assert resp.headers["X-Content-Type-Options"] == "nosniff", path
    async with client.request("GET", "/", token="") as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert resp.headers["Referrer-Policy"]


class FaultyPartner:
    """A raw TCP server that misbehaves on purpose."""

    def __init__(self, mode: str, redirect_to: str = "") -> None:
        self.mode = mode
        self.redirect_to = redirect_to
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if self.mode == "reset":
                writer.transport.abort()
                return
            if self.mode == "slow-headers":
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 100:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.5)
            if self.mode == "huge":
                writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 104857600\r\n\r\n")
                chunk = b"y" * 65536
                for _ in range(1600):
                    writer.write(chunk)
                    await writer.drain()
            if self.mode == "redirect":
                # Read the body first: closing with it unread resets the connection,
                # and the sender may see that before the answer.
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                writer.write(
                    b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                    + self.redirect_to.encode()
                    + b"\r\nContent-Length: 0\r\n\r\n"
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def healthy() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


async def test_misbehaving_partners_block_no_one(
    start_server: ServerFactory, tokens: dict[str, str], store: Storage, healthy: Receiver
) -> None:
    client = await start_server(
        allow_private_targets=True, delivery_timeout=2.0, retry_schedule=(60.0,)
    )
    client.token = tokens["operator"]
    partners = [
        FaultyPartner("reset"),
        FaultyPartner("slow-headers"),
        FaultyPartner("huge"),
        FaultyPartner("redirect", redirect_to="http://169.254.169.254/latest/meta-data"),
    ]
    subs = {}
    try:
        for partner in partners:
            url = await partner.start()
            async with client.request(
                "POST", "/api/subscriptions", json={"url": url, "topics": ["*"]}
            ) as resp:
                subs[partner.mode] = (await resp.json())["id"]
        ok = {"url": healthy.url("/ok"), "topics": ["*"]}
        async with client.request("POST", "/api/subscriptions", json=ok) as resp:
            assert resp.status == 201
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(3):
            async with client.request("POST", "/api/articles", json={**ARTICLE, "id": f"f{n}"}):
                pass
        await healthy.wait_for(lambda: len(healthy.at("/ok")) == 3, timeout=3)
        assert loop.time() - started < 3, "the healthy partner was not held back"

        async def settled() -> dict[str, Any]:
            out = {}
            for mode, sub_id in subs.items():
                log = await store.list_deliveries(sub_id)
                if len(log) < 3 or any(d.status == "pending" for d in log):
                    return {}
                out[mode] = log
            return out

        logs: dict[str, Any] = {}
        for _ in range(80):
            logs = await settled()
            if logs:
                break
            await asyncio.sleep(0.1)
        assert logs, "every faulty delivery got an outcome"
        for mode, log in logs.items():
            assert all(d.status == "failed" for d in log), mode
        assert all("timed out" in (d.last_error or "") for d in logs["slow-headers"])
        huge = logs["huge"][0]
        assert huge.last_status_code == 500 and len(huge.last_response_body or "") <= 4096
        redirect = logs["redirect"][0]
        assert redirect.last_status_code == 307 and "not followed" in (redirect.last_error or "")
    finally:
        for partner in partners:
            await partner.close()


async def test_batch_of_unchanged_copies_is_idempotent(
    client: Client, store: Storage, seed_articles: list[dict[str, Any]]
) -> None:
    items = copy.deepcopy(seed_articles)
    for _ in range(3):
        async with client.request("POST", "/api/articles/batch", json={"articles": items}) as r:
            assert r.status == 200
    assert len(await store.list_events(limit=1000)) == len(items)
