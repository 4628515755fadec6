"""``GET /api/events/stream``: the change log as Server-Sent Events, read by a real
SSE client from PyPI (httpx-sse) and, where the bytes matter, by raw connections.
Both backends: events in order with the webhook-ids of their pushes, the same JSON
as ``GET /api/events``; filters; resuming with ``Last-Event-ID`` or ``after=``;
heartbeats; the caps (429); a client that stops reading is ended with a last
message and resumes losing nothing; every bad input answered before the stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from conftest import Client, ServerFactory, expect_problem
from httpx_sse import ServerSentEvent, aconnect_sse
from receiver import Receiver
from standardwebhooks import Webhook

from storage import Storage
from syndicate.web.auth import create_token

STREAM = "/api/events/stream"


def article(n: int, topic: str = "liver-health", **changes: Any) -> dict[str, Any]:
    return {
        "id": f"a{n}",
        "title": f"Article {n}",
        "content": f"<p>Body {n}.</p>",
        "topics": [topic],
        **changes,
    }


async def write(client: Client, *articles: dict[str, Any]) -> None:
    async with client.request(
        "POST", "/api/articles/batch", json={"articles": list(articles)}
    ) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["rejected"] == 0


async def pulled(client: Client, query: str = "") -> list[dict[str, Any]]:
    """Every item ``GET /api/events`` gives, page after page."""
    items: list[dict[str, Any]] = []
    path = f"/api/events?limit=1000{query}"
    while True:
        async with client.request("GET", path) as r:
            assert r.status == 200, await r.text()
            page = await r.json()
        items += page["events"]
        if not page["has_more"]:
            return items
        path = f"/api/events?limit=1000{query}&after={page['next_cursor']}"


@contextlib.asynccontextmanager
async def sse(
    client: Client,
    token: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
    """The stream as httpx-sse reads it (comments and ``retry:`` are its business)."""
    async with httpx.AsyncClient(
        base_url=client.base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(10.0),
    ) as http:
        async with aconnect_sse(
            http, "GET", STREAM, params=params, headers=headers or {}
        ) as source:
            assert source.response.status_code == 200
            yield source.aiter_sse()


async def take(events: AsyncIterator[ServerSentEvent], count: int) -> list[ServerSentEvent]:
    got: list[ServerSentEvent] = []
    async with asyncio.timeout(10):
        async for event in events:
            if not event.data:
                # httpx-sse surfaces the retry: block, and a blank line after a comment
                # once an id was seen, as events without data; the spec dispatches none.
                continue
            got.append(event)
            if len(got) == count:
                break
    return got


async def test_events_arrive_in_order_with_their_push_ids_and_the_pull_apis_json(
    start_server: ServerFactory, tokens: dict[str, str], receiver: Receiver
) -> None:
    client = await start_server(allow_private_targets=True)
    client.token = tokens["operator"]
    hook = {"url": receiver.url("/hook"), "topics": ["*"]}
    async with client.request(
        "POST", "/api/subscriptions", json=hook, token=tokens["partner"]
    ) as r:
        secret = (await r.json())["secret"]
    await write(client, article(1), article(2))
    async with sse(client, tokens["partner"]) as events:
        first = await take(events, 2)
        # Written while the client streams: an update and a deletion.
        await write(client, article(1, title="Article 1, revised"))
        async with client.request("DELETE", "/api/articles/a2") as r:
            assert r.status == 204
        later = await take(events, 2)
    got = first + later
    assert [json.loads(e.data)["type"] for e in got] == [
        "article.published",
        "article.published",
        "article.updated",
        "article.deleted",
    ]
    assert all(e.event == "message" for e in got), "no event: field; onmessage gets every one"
    assert [json.loads(e.data) for e in got] == await pulled(client)
    assert [e.id for e in got] == [json.loads(e.data)["id"] for e in got]
    await receiver.wait_for(lambda: len(receiver.at("/hook")) == 4)
    pushes = [Webhook(secret).verify(r.body, r.headers) for r in receiver.at("/hook")]
    by_id = {r.message_id: body for r, body in zip(receiver.at("/hook"), pushes, strict=True)}
    assert sorted(by_id) == sorted(e.id for e in got)
    for event in got:
        body = json.loads(event.data)
        assert {k: v for k, v in body.items() if k != "id"} == by_id[event.id]


async def test_filters_and_resuming_lose_and_repeat_nothing(
    client: Client, tokens: dict[str, str]
) -> None:
    await write(client, *(article(n, "liver-health" if n % 2 else "kidney") for n in range(1, 9)))
    async with client.request("DELETE", "/api/articles/a3") as r:
        assert r.status == 204
    everything = await pulled(client)
    ids = [i["id"] for i in everything]
    assert len(ids) == 9

    params = {"topics": "liver-health", "types": "article.published"}
    async with sse(client, tokens["partner"], params=params) as events:
        filtered = await take(events, 4)
    assert [json.loads(e.data)["data"]["id"] for e in filtered] == ["a1", "a3", "a5", "a7"]

    async with sse(client, tokens["partner"]) as events:
        head = await take(events, 3)
    assert [e.id for e in head] == ids[:3]
    # EventSource's reconnect: Last-Event-ID, and the original URL (whose after= it wins over).
    last = {"Last-Event-ID": head[-1].id}
    async with sse(client, tokens["partner"], params={"after": ids[0]}, headers=last) as events:
        rest = await take(events, 6)
    assert [e.id for e in head + rest] == ids
    async with sse(client, tokens["partner"], params={"after": ids[4]}) as events:
        assert [e.id for e in await take(events, 4)] == ids[5:]
    cursor_page = await pulled(client, "&types=article.deleted")
    assert [i["data"]["id"] for i in cursor_page] == ["a3"]


async def raw_stream(
    client: Client, token: str, path: str = STREAM, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain socket's request; the caller reads the answer (or does not)."""
    host, port = client.base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def test_heartbeats_and_headers(start_server: ServerFactory, tokens: dict[str, str]) -> None:
    client = await start_server(stream_heartbeat=0.05)
    reader, writer = await raw_stream(client, tokens["partner"])
    try:
        async with asyncio.timeout(5):
            head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            body = b""
            while body.count(b": heartbeat\n") < 3:
                body += await reader.readline()
    finally:
        writer.close()
    assert head.startswith("http/1.1 200")
    assert "content-type: text/event-stream; charset=utf-8" in head
    assert "cache-control: no-store" in head and "x-accel-buffering: no" in head
    assert body.index(b"retry: 2000\n") < body.index(b": heartbeat\n")


async def test_caps_per_token_and_in_all(
    start_server: ServerFactory, tokens: dict[str, str], store: Storage
) -> None:
    client = await start_server(stream_max_per_token=1, stream_max=2)
    client.token = tokens["operator"]
    opened = [await raw_stream(client, tokens["partner"])]
    await opened[0][0].readuntil(b"retry: 2000\n")
    async with client.request("GET", STREAM, token=tokens["partner"]) as r:
        body = await expect_problem(r, 429)
        assert int(r.headers["Retry-After"]) > 0
        assert "this token" in body["detail"]
    opened.append(await raw_stream(client, tokens["operator"]))
    await opened[1][0].readuntil(b"retry: 2000\n")
    other, _ = await create_token(store, name="p2", role="partner")
    async with client.request("GET", STREAM, token=other) as r:
        body = await expect_problem(r, 429)
        assert r.headers["Retry-After"] and "the server has 2 streams" in body["detail"]
    # A stream closed gives its slot back (within a second: not at the next heartbeat).
    opened[0][1].close()
    async with asyncio.timeout(2):
        while True:
            async with client.request("GET", STREAM, token=other) as r:
                if r.status == 200:
                    break
                await expect_problem(r, 429)
            await asyncio.sleep(0.02)
    opened[1][1].close()


BAD = [
    ("?after=cur_zzzzzzzz", {}, 400, "after"),
    ("?after=nonsense", {}, 400, "after"),
    ("", {"Last-Event-ID": "msg_nonsense"}, 400, "Last-Event-ID"),
    ("?after=msg_0190f0e0a0b07c0d8e0f101112131415", {}, 404, "after"),
    ("?topics=no-such-topic", {}, 422, "topics"),
    ("?types=article.eaten", {}, 422, "types"),
    ("?limit=5", {}, 422, "limit"),
]


async def test_bad_input_is_answered_before_the_stream(client: Client) -> None:
    await write(client, article(1))
    for query, headers, status, field in BAD:
        async with client.request("GET", STREAM + query, headers=headers) as r:
            body = await expect_problem(r, status)
        assert field in json.dumps(body), (query, headers, body)
    async with client.request("GET", STREAM, token="") as r:
        await expect_problem(r, 401)


async def test_a_position_older_than_the_log_keeps_is_410(
    client: Client, tokens: dict[str, str], store: Storage
) -> None:
    await write(client, article(1), article(2))
    gone = (await pulled(client))[0]["id"]
    await write(client, article(3))
    async with asyncio.timeout(10):  # once the fan-out has passed them, they may go
        while not await store.prune_events(before=datetime.now(UTC), limit=2):
            await asyncio.sleep(0.02)
    for query, headers in ((f"?after={gone}", {}), ("", {"Last-Event-ID": gone})):
        async with client.request("GET", STREAM + query, headers=headers) as r:
            body = await expect_problem(r, 410)
        assert "GET /api/articles?updated_since=" in body["detail"]


async def test_an_id_of_the_oldest_kept_events_millisecond_not_kept_is_410(
    client: Client, tokens: dict[str, str], store: Storage
) -> None:
    """Events of one write share their millisecond, and a prune may keep the second of
    them: an id of that millisecond that is not kept is one pruned (410), not an id
    from elsewhere (404)."""
    await write(client, article(1), article(2))
    await write(client, article(3))
    async with asyncio.timeout(10):
        while not await store.prune_events(before=datetime.now(UTC), limit=1):
            await asyncio.sleep(0.02)
    oldest_kept = (await pulled(client))[0]["id"]
    same_millisecond = oldest_kept[:16] + "0" * 20  # msg_ + its 48 time bits
    assert same_millisecond != oldest_kept
    async with client.request("GET", STREAM + f"?after={same_millisecond}") as r:
        await expect_problem(r, 410)


def dechunked(raw: bytes) -> tuple[bytes, bool]:
    """An HTTP/1.1 chunked body's bytes, and whether its last chunk came."""
    body, rest = b"", raw
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return body, True
        body, rest = body + rest[:size], rest[size + 2 :]
    return body, False


BIG = "<p>" + "liver " * 20_000 + "</p>"  # ~120 KB per event


async def fill_until_too_slow(
    client: Client, caplog: pytest.LogCaptureFixture, *, written: int = 0
) -> int:
    """Write big events until the server logs the stream's client as too slow (up to
    ~7 MB: more than the kernel's buffers take); returns how many were written."""
    n = written
    async with asyncio.timeout(20):
        while not any("slow consumer" in r.getMessage() for r in caplog.records):
            if n < written + 60:
                await write(client, *(article(n + i, content=BIG) for i in range(5)))
                n += 5
            else:
                await asyncio.sleep(0.02)
    return n


async def slot_taken(client: Client, token: str) -> bool:
    """Is the token's one stream slot in use? (Opens and closes a stream if not.)"""
    async with client.request("GET", STREAM, token=token) as r:
        if r.status == 429:
            return True
        assert r.status == 200
        return False


async def test_a_client_that_stops_reading_is_ended_with_a_last_message_and_resumes(
    start_server: ServerFactory, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="syndicate.stream")
    client = await start_server(stream_write_timeout=1.0, stream_max_per_token=1)
    client.token = tokens["operator"]
    partner = tokens["partner"]
    # A tiny receive window, and nothing read past the first bytes.
    reader, writer = await raw_stream(client, partner, rcvbuf=4096)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    await fill_until_too_slow(client, caplog)
    async with asyncio.timeout(10):
        raw = await reader.read()  # to the end: the server closes the connection
    writer.close()
    body, complete = dechunked(raw)
    assert complete, "the response ended cleanly"
    text = body.decode()
    frames = [f for f in text.split("\n\n") if f]
    assert frames[-1].splitlines()[-2:] == [
        "event: close",
        'data: {"reason":"slow consumer","resume":"reconnect with Last-Event-ID"}',
    ]
    got = [line.removeprefix("id: ") for line in text.splitlines() if line.startswith("id: ")]
    ids = [i["id"] for i in await pulled(client)]
    assert got == ids[: len(got)] and len(got) < len(ids)
    async with sse(client, partner, headers={"Last-Event-ID": got[-1]}) as events:
        rest = await take(events, len(ids) - len(got))
    assert got + [e.id for e in rest] == ids


async def test_a_client_that_never_reads_again_is_cut_off(
    start_server: ServerFactory, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """It does not take its last word either: the server frees the slot at once,
    closes the connection, and what the kernel held for it is all the client gets."""
    caplog.set_level(logging.INFO, logger="syndicate.stream")
    client = await start_server(stream_write_timeout=0.5, stream_max_per_token=1)
    client.token = tokens["operator"]
    partner = tokens["partner"]
    reader, writer = await raw_stream(client, partner, rcvbuf=4096)
    await reader.readuntil(b"\r\n\r\n")
    await fill_until_too_slow(client, caplog)
    ended = asyncio.get_running_loop().time()
    async with asyncio.timeout(5):
        while await slot_taken(client, partner):
            await asyncio.sleep(0.05)
    assert asyncio.get_running_loop().time() - ended < 2
    with contextlib.suppress(ConnectionError):  # a reset, if the server had to cut it
        async with asyncio.timeout(5):
            while await reader.read(2**16):
                pass  # what the kernel had, then the end: the connection is closed
    writer.close()


async def test_a_stream_of_a_revoked_token_ends(
    start_server: ServerFactory, tokens: dict[str, str], store: Storage
) -> None:
    client = await start_server(stream_heartbeat=0.1)
    reader, writer = await raw_stream(client, tokens["partner"])
    try:
        async with asyncio.timeout(5):
            await reader.readuntil(b"retry: 2000\n")
            await store.revoke_token("test-partner")
            rest = await reader.readuntil(b"\r\n0\r\n\r\n")  # the chunked body's end
    finally:
        writer.close()
    assert b'event: close\ndata: {"reason":"token revoked"}\n\n' in rest
    async with client.request("GET", STREAM, token=tokens["partner"]) as r:
        await expect_problem(r, 401)
