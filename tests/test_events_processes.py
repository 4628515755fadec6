"""The event stream across real ``syndicate serve`` processes, read by httpx-sse:
a client streaming from one process that is SIGKILLed reconnects to another on the
same PostgreSQL database with ``Last-Event-ID`` and ends with every event once, in
order; and a SIGTERM ends a stream with a last comment, and the process promptly."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from conftest import PostgresServer, free_port, fresh_database
from httpx_sse import aconnect_sse
from test_delivery_durability import start

from storage import open_storage
from syndicate.web.auth import create_token

STREAM = "/api/events/stream"
TOTAL = 1000
BATCH = 50


@pytest.fixture
async def postgres_url(
    tmp_path: Path, postgres_server: PostgresServer | None
) -> AsyncIterator[str]:
    """A fresh PostgreSQL database (skipped without a server; under CI=true, failed)."""
    async with fresh_database("postgres", tmp_path / "unused.db", postgres_server) as url:
        yield url


async def tokens_for(database_url: str) -> tuple[str, str]:
    store = await open_storage(database_url)
    try:
        operator, _ = await create_token(store, name="ops", role="operator")
        partner, _ = await create_token(store, name="partner", role="partner")
    finally:
        await store.close()
    return operator, partner


def article(n: int) -> dict[str, Any]:
    return {"id": f"a{n}", "title": f"Article {n}", "content": f"<p>{n}</p>", "topics": ["t"]}


async def test_a_stream_resumes_on_another_process_after_a_kill_losing_and_repeating_nothing(
    postgres_url: str,
) -> None:
    operator, partner = await tokens_for(postgres_url)
    ports = [free_port(), free_port()]
    a, b = [await start("serve", "--port", str(p), database_url=postgres_url) for p in ports]
    got: list[str] = []
    try:

        async def write_through_b() -> None:
            url = f"http://127.0.0.1:{ports[1]}/api/articles/batch"
            headers = {"Authorization": f"Bearer {operator}"}
            async with aiohttp.ClientSession() as http:
                for first in range(0, TOTAL, BATCH):
                    batch = {"articles": [article(n) for n in range(first, first + BATCH)]}
                    async with http.post(url, json=batch, headers=headers) as r:
                        assert r.status == 200 and (await r.json())["created"] == BATCH

        async def read(port: int, *, kill_after: int | None = None) -> None:
            headers = {"Last-Event-ID": got[-1]} if got else {}
            auth = {"Authorization": f"Bearer {partner}"}
            async with httpx.AsyncClient(headers=auth, timeout=10) as http:
                url = f"http://127.0.0.1:{port}{STREAM}"
                async with aconnect_sse(http, "GET", url, headers=headers) as source:
                    async for event in source.aiter_sse():
                        if event.data:
                            got.append(event.id)
                        if len(got) == kill_after:
                            a.send_signal(signal.SIGKILL)
                        if len(got) >= TOTAL:
                            return

        writer = asyncio.create_task(write_through_b())
        async with asyncio.timeout(15):
            with pytest.raises(httpx.TransportError):  # the process died mid-stream
                await read(ports[0], kill_after=300)
            await a.wait()
            killed_at = len(got)
            await read(ports[1])
            await writer
        assert 300 <= killed_at < TOTAL
    finally:
        for process in (a, b):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), timeout=20)
    store = await open_storage(postgres_url)
    try:
        stored = [e.id for e in await store.list_events(limit=2 * TOTAL)]
    finally:
        await store.close()
    assert len(stored) == TOTAL
    assert got == stored, "every event once, in commit order"


async def test_sigterm_ends_streams_with_a_last_comment_and_serve_stops_promptly(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    operator, partner = await tokens_for(database_url)
    port = free_port()
    serve = await start("serve", "--port", str(port), database_url=database_url)
    lines: list[str] = []
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            made = await http.post(
                "/api/articles", json=article(1), headers={"Authorization": f"Bearer {operator}"}
            )
            assert made.status_code == 201
            auth = {"Authorization": f"Bearer {partner}"}
            async with http.stream("GET", STREAM, headers=auth) as response:
                assert response.status_code == 200
                async with asyncio.timeout(10):
                    async for line in response.aiter_lines():
                        lines.append(line)
                        if line.startswith("data: "):
                            serve.send_signal(signal.SIGTERM)
                            signalled = time.monotonic()
                # The body ended cleanly (a cut one raises in aiter_lines).
        assert await asyncio.wait_for(serve.wait(), timeout=10) == 0
        assert time.monotonic() - signalled < 3, "serve stopped promptly"
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
    assert lines[-2:] == [": server shutting down, reconnect with Last-Event-ID", ""]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_long_poll_answers_within_100_ms_of_a_write_by_another_process(
    backend: str, tmp_path: Path, postgres_server: PostgresServer | None
) -> None:
    """Two real serve processes on one database: a long-poll waiting on A answers a
    write made through B (SQLite: seen in the WAL header; PostgreSQL: LISTEN/NOTIFY),
    timed from B's 201 (the commit) to A's answer."""
    async with fresh_database(backend, tmp_path / "db.sqlite", postgres_server) as url:
        operator, partner = await tokens_for(url)
        ports = [free_port(), free_port()]
        a, b = [await start("serve", "--port", str(p), database_url=url) for p in ports]
        latencies: list[float] = []
        try:
            poll_url = f"http://127.0.0.1:{ports[0]}/api/events"
            write_url = f"http://127.0.0.1:{ports[1]}/api/articles"
            reader = {"Authorization": f"Bearer {partner}"}
            writer = {"Authorization": f"Bearer {operator}"}
            async with aiohttp.ClientSession() as http:
                async with http.get(poll_url, headers=reader) as r:
                    cursor = (await r.json())["next_cursor"]
                for n in range(5):

                    async def poll(after: str) -> tuple[dict[str, Any], float]:
                        params = {"after": after, "wait": "10"}
                        async with http.get(poll_url, params=params, headers=reader) as r:
                            assert r.status == 200, await r.text()
                            page = await r.json()
                        return page, time.monotonic()

                    waiting = asyncio.create_task(poll(cursor))
                    await asyncio.sleep(0.3)  # the poll is in and waiting
                    assert not waiting.done()
                    async with http.post(write_url, json=article(n), headers=writer) as r:
                        assert r.status == 201
                        committed = time.monotonic()
                    page, answered = await asyncio.wait_for(waiting, timeout=5)
                    assert [e["data"]["id"] for e in page["events"]] == [f"a{n}"]
                    latencies.append(answered - committed)
                    cursor = page["next_cursor"]
        finally:
            for process in (a, b):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(process.wait(), timeout=20)
    print(f"{backend}: commit -> long-poll answer (ms):", [round(x * 1000) for x in latencies])
    assert sorted(latencies)[len(latencies) // 2] < 0.1, latencies
    assert max(latencies) < 0.25, latencies
