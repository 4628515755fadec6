"""A bounded soak: mixed reads, writes and deliveries against a real `syndicate serve`.
No 5xx, nothing lost, and the process's memory levels off. CI runs a short version;
`SYNDICATE_SOAK_SECONDS=120 make test` runs the long one."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import aiohttp
import pytest
from conftest import free_port
from receiver import Receiver
from test_delivery_durability import OUTPUT, start

from storage import open_storage
from syndicate.web.auth import create_token

SECONDS = float(os.environ.get("SYNDICATE_SOAK_SECONDS", "8"))
TOPICS = ["liver-health", "diabetes", "skin-health"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.soak
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_soak_mixed_load(database_url: str, receiver: Receiver) -> None:
    store = await open_storage(database_url)
    try:
        token, _ = await create_token(store, name="ops", role="operator")
        for topic in TOPICS:
            await store.put_topic(topic, title=topic, description="")
        for n in range(5):
            await store.create_subscription(
                id=f"sub_{n}",
                kind="webhook",
                url=receiver.url(f"/hook{n}"),
                topics=["*"],
                events=[],
                secret="whsec_" + "A" * 43 + "=",
                owner="partner",
            )
    finally:
        await store.close()
    port = free_port()
    # The receiver shares this process with the load generator, so under load it
    # answers slowly: a realistic timeout keeps retries (and their 5 s wait) rare.
    server = await start(
        "serve", "--port", str(port), database_url=database_url, SYNDICATE_DELIVERY_TIMEOUT="5"
    )
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    statuses: list[int] = []
    rng = random.Random(7)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SECONDS
    samples: list[int] = []
    written: set[str] = set()

    async def one(http: aiohttp.ClientSession, n: int) -> None:
        kind = rng.random()
        topic = rng.choice(TOPICS)
        if kind < 0.5:
            fmt = rng.choice(["rss", "atom", "json"])
            async with http.get(f"{base}/feeds/{topic}.{fmt}") as resp:
                await resp.read()
                statuses.append(resp.status)
        elif kind < 0.8:
            article_id = f"s{rng.randrange(300)}"
            body = {
                "title": f"Soak {n}",
                "content": "<p>" + "text " * 200 + "</p>",
                "topics": [topic],
            }
            async with http.put(
                f"{base}/api/articles/{article_id}", json=body, headers=auth
            ) as resp:
                statuses.append(resp.status)
                written.add(article_id)
        elif kind < 0.9:
            async with http.get(f"{base}/api/articles?topic={topic}&limit=20", headers=auth) as r:
                await r.read()
                statuses.append(r.status if r.status != 404 else 200)
        else:
            async with http.delete(
                f"{base}/api/articles/s{rng.randrange(300)}", headers=auth
            ) as resp:
                statuses.append(200 if resp.status in (204, 404) else resp.status)

    try:
        async with aiohttp.ClientSession() as http:
            n = 0
            while loop.time() < deadline:
                await asyncio.gather(*(one(http, n + k) for k in range(16)))
                n += 16
                samples.append(rss_kib(server.pid))
        assert statuses and max(statuses) < 500, "no server errors"
        assert all(s in (200, 201, 304) for s in statuses), set(statuses)
        half = samples[len(samples) // 2]
        end = samples[-1]
        assert end <= half * 1.15 + 8 * 1024, f"memory keeps growing: {half} -> {end} KiB"
        assert end < 300 * 1024
        store = await open_storage(database_url)
        try:
            for _ in range(300):
                if (await store.delivery_stats()).pending == 0:
                    break
                await asyncio.sleep(0.1)
            log = b"".join(OUTPUT.get(server.pid, [])).decode()[-3000:]
            assert (await store.delivery_stats()).pending == 0, f"undelivered; log:\n{log}"
            events = await store.list_events(limit=1_000_000)
        finally:
            await store.close()
        ids = {(r.path, r.message_id) for r in receiver.received}
        assert len(ids) == 5 * len(events), "each change reached each partner"
    finally:
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), timeout=30) == 0
