"""Slow and idle clients: a header read timeout, an idle keep-alive timeout, a
slow body left alone, and per-client limits keyed by IPv4 address or IPv6 /64."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from aiohttp import web
from conftest import ServeFactory, free_port
from yarl import URL

from storage import Storage
from syndicate.core.settings import Settings
from syndicate.web.app import create_app, make_runner
from syndicate.web.auth import create_token
from syndicate.web.limits import address_key

ARTICLE = b'{"id": "slow", "title": "Slow", "content": "<p>x</p>", "topics": ["t"]}'


@pytest.fixture
def backend() -> str:
    return "sqlite"  # nothing here is about storage


async def connect(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = URL(base)
    return await asyncio.open_connection(url.host, url.port)


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes (reading what it sends meanwhile)."""
    start = time.monotonic()
    async with asyncio.timeout(limit):
        while await reader.read(65536):
            pass
    return time.monotonic() - start


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=3)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await asyncio.wait_for(reader.readexactly(length), timeout=3)
    return head


async def test_slow_headers_are_cut_at_the_header_timeout(serve_app: ServeFactory) -> None:
    base = await serve_app(header_timeout=0.5)

    async def slow_client() -> float:
        reader, writer = await connect(base)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

        async def drip() -> None:
            for i in range(100):
                await asyncio.sleep(0.1)
                writer.write(b"X-Slow-%d: 1\r\n" % i)

        dripping = asyncio.create_task(drip())
        try:
            return await closed_after(reader, 5)
        finally:
            dripping.cancel()
            writer.close()

    waits = await asyncio.gather(*(slow_client() for _ in range(50)))
    assert max(waits) < 2.5, waits  # 0.5 s, with room for a loaded machine


async def test_a_silent_connection_is_closed_at_the_header_timeout(
    serve_app: ServeFactory,
) -> None:
    base = await serve_app(header_timeout=0.3, keepalive_timeout=30)
    reader, writer = await connect(base)
    try:
        assert await closed_after(reader, 5) < 2
    finally:
        writer.close()


async def test_idle_keepalive_connections_close_and_busy_ones_stay(
    serve_app: ServeFactory,
) -> None:
    base = await serve_app(header_timeout=5, keepalive_timeout=0.5)
    reader, writer = await connect(base)
    try:
        for _ in range(3):  # each request within the timeout keeps the connection
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.3)
        assert await closed_after(reader, 5) < 2
    finally:
        writer.close()


async def test_a_slow_body_is_not_cut_by_the_header_timeout(
    serve_app: ServeFactory, store: Storage
) -> None:
    base = await serve_app(header_timeout=0.3)
    secret, _ = await create_token(store, name="op", role="operator")
    reader, writer = await connect(base)
    try:
        writer.write(
            b"PUT /api/articles/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
            % (secret.encode(), len(ARTICLE))
        )
        for start in range(0, len(ARTICLE), 25):
            await asyncio.sleep(0.2)
            writer.write(ARTICLE[start : start + 25])
        assert (await read_response(reader)).startswith(b"HTTP/1.1 201")
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/api/articles/slow", "/hub"])
async def test_a_body_trickled_past_the_body_timeout_gets_a_408(
    serve_app: ServeFactory, store: Storage, path: str
) -> None:
    """Headers have header_timeout; a body trickled a byte at a time holds the
    connection no longer than body_timeout (it did for ever, no token needed on /hub)."""
    base = await serve_app(header_timeout=0.3, body_timeout=0.8)
    secret, _ = await create_token(store, name="op", role="operator")
    ctype = "application/json" if path.startswith("/api") else "application/x-www-form-urlencoded"
    method = "PUT" if path.startswith("/api") else "POST"
    reader, writer = await connect(base)
    started = asyncio.get_running_loop().time()
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n".encode()
            + b"Authorization: Bearer %s\r\nContent-Length: 100\r\n\r\n" % secret.encode()
        )
        for _ in range(10):  # 1 byte every 0.25 s: 100 bytes would take 25 s
            await asyncio.sleep(0.25)
            writer.write(b"a")
            if reader.at_eof():
                break
        answer = await read_response(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"application/problem+json" in answer
    assert asyncio.get_running_loop().time() - started < 3


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", True),
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("::ffff:192.0.2.7", "192.0.2.7", True),
        ("192.0.2.7", "192.0.2.8", False),
        ("fe80::1%eth0", "fe80::2", True),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(one: str, other: str, same: bool) -> None:
    assert (address_key(one) == address_key(other)) is same
    assert address_key(one).startswith("ip:")


async def test_failed_auth_limit_counts_mapped_ipv4_as_ipv4(store: Storage) -> None:
    """The same client over IPv4 and over a dual-stack socket (where it appears as
    ``::ffff:127.0.0.1``) spends one failed-authentication budget."""
    v4_port, v6_port = free_port(), free_port()
    settings = Settings(host="127.0.0.1", port=v4_port, write_rate=0.01, write_burst=3)
    runner = make_runner(create_app(settings, storage=store), settings, shutdown_timeout=2)
    await runner.setup()
    dual = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    dual.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    dual.bind(("::", v6_port))
    try:
        await web.TCPSite(runner, "127.0.0.1", v4_port).start()
        await web.SockSite(runner, dual).start()
        bad = {"Authorization": "Bearer syn_not-a-token"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for _ in range(3):
                async with http.get(f"http://127.0.0.1:{v4_port}/api/articles", headers=bad) as r:
                    assert r.status == 401
            async with http.get(f"http://127.0.0.1:{v6_port}/api/articles", headers=bad) as r:
                assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    finally:
        await runner.cleanup()
        dual.close()
