"""Bad input at every level gets a clear, bounded 4xx: JSON the parser refuses,
validation errors by the hundred thousand, and requests aiohttp cannot parse."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from conftest import ServeFactory, expect_problem
from yarl import URL

from storage import Storage
from syndicate.content.validation import MAX_ERRORS
from syndicate.web.auth import create_token

ARTICLE = {"id": "a1", "title": "Liver", "content": "<p>x</p>", "topics": ["liver-health"]}


@pytest.fixture
def backend() -> str:
    return "sqlite"  # nothing here is about storage


@pytest.fixture
async def api(
    serve_app: ServeFactory, store: Storage
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    base = await serve_app()
    secret, _ = await create_token(store, name="op", role="operator")
    headers = {"Authorization": f"Bearer {secret}"}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        yield base, session


async def post_raw(api: tuple[str, aiohttp.ClientSession], path: str, body: bytes) -> Any:
    base, session = api
    headers = {"Content-Type": "application/json"}
    return session.post(base + path, data=io.BytesIO(body), headers=headers)


async def test_a_number_beyond_the_parser_is_a_400(
    api: tuple[str, aiohttp.ClientSession],
) -> None:
    for body in (b'{"id": "a1", "title": ' + b"9" * 5000 + b"}", b"[" + b"1" * 4301 + b"]"):
        async with await post_raw(api, "/api/articles", body) as resp:
            problem = await expect_problem(resp, 400)
        assert "malformed JSON" in problem["detail"]


async def test_a_megabyte_of_unknown_keys_gets_a_small_422(
    api: tuple[str, aiohttp.ClientSession],
) -> None:
    extra = {f"u{i:05d}": 0 for i in range(75_000)}
    body = json.dumps({**ARTICLE, **extra}).encode()
    assert len(body) > 1_000_000 - 100_000
    async with await post_raw(api, "/api/articles", body) as resp:
        raw = await resp.read()
        problem = await expect_problem(resp, 422)
    assert len(raw) < 20_000, len(raw)
    assert len(problem["errors"]) == MAX_ERRORS
    assert problem["errors_omitted"] == 75_000 - MAX_ERRORS
    assert problem["errors"][0] == {"field": "u00000", "message": "unknown field"}
    assert problem["detail"].endswith(f"and {75_000 - MAX_ERRORS} more")


async def test_one_huge_key_is_cut_in_the_answer(
    api: tuple[str, aiohttp.ClientSession],
) -> None:
    body = json.dumps({**ARTICLE, "k" * 500_000: 1}).encode()
    async with await post_raw(api, "/api/articles", body) as resp:
        raw = await resp.read()
        problem = await expect_problem(resp, 422)
    assert len(raw) < 2_000 and problem["errors"][0]["field"].endswith("…")


async def test_batch_items_count_the_errors_they_leave_out(
    api: tuple[str, aiohttp.ClientSession],
) -> None:
    item = {**ARTICLE, **{f"x{i}": 0 for i in range(500)}}
    body = json.dumps({"articles": [item]}).encode()
    async with await post_raw(api, "/api/articles/batch", body) as resp:
        assert resp.status == 200, await resp.text()
        [result] = (await resp.json())["results"]
    errors = result["errors"]
    assert result["status"] == "rejected" and len(errors) == MAX_ERRORS + 1
    assert errors[-1] == {"field": "articles.0", "message": f"and {500 - MAX_ERRORS} more errors"}


async def raw_exchange(base: str, data: bytes) -> tuple[bytes, dict[str, Any]]:
    """Send ``data``; the answer's head and its JSON body (the server closes)."""
    url = URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=3)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, json.loads(body)


@pytest.mark.parametrize(
    ("request_bytes", "detail"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\n\r\n", "character"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", "8190 bytes"),
        (b"GET /" + b"p" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "8190 bytes"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", "malformed"),
        (b"GET /x y HTTP/1.1\r\n\r\n", "request line"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello\r\n\r\n", "request line"),
    ],
    ids=["nul-in-header", "long-header", "long-target", "space-in-name", "bad-line", "tls"],
)
async def test_protocol_errors_are_problem_json(
    serve_app: ServeFactory, request_bytes: bytes, detail: str
) -> None:
    base = await serve_app()
    head, body = await raw_exchange(base, request_bytes)
    assert head.split(b"\r\n")[0].endswith(b"400 Bad Request"), head
    assert b"Content-Type: application/problem+json" in head
    assert body["status"] == 400 and body["title"] == "Bad Request"
    assert detail in body["detail"], body
    assert body["request_id"] and f"X-Request-Id: {body['request_id']}".encode() in head
