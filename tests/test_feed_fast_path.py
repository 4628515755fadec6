"""What the per-request savings on the read path must not change: the header read
timeout keeps one timer per connection (not one per request), and still cuts a slow
request head that follows quick ones on a kept-alive connection at its own deadline."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import ServeFactory
from test_edge_timeouts import closed_after, connect, read_response


@pytest.fixture
def backend() -> str:
    return "sqlite"  # nothing here is about storage


async def test_a_slow_head_after_quick_requests_is_cut_at_its_own_deadline(
    serve_app: ServeFactory,
) -> None:
    base = await serve_app(header_timeout=0.6, keepalive_timeout=30)
    reader, writer = await connect(base)
    try:
        # Quick requests for longer than the timeout: the timer armed by the first
        # one fires meanwhile and must not close a connection that is keeping up.
        for _ in range(6):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.2)
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        await closed_after(reader, 5)
        waited = time.monotonic() - started
        assert 0.5 <= waited < 2.5, waited  # 0.6 s from its first bytes, on a loaded machine
    finally:
        writer.close()
