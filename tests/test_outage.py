"""The database goes away mid-run: the service says 503, then recovers by itself."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg
import pytest
from conftest import Client, expect_problem, pg_dsn


async def set_outage(database_url: str, *, down: bool) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(pg_dsn(), timeout=5)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not down).lower()}')
        if down:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
    finally:
        await admin.close()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_postgres_outage_gives_503_then_recovers(
    client: Client, database_url: str, seed_article: dict[str, object]
) -> None:
    async with client.request("PUT", "/api/articles/liver-calcification", json=seed_article) as r:
        assert r.status == 201

    await set_outage(database_url, down=True)
    try:
        async with client.request("GET", "/readyz") as resp:
            await expect_problem(resp, 503)
        async with client.request("GET", "/api/articles/liver-calcification") as resp:
            body = await expect_problem(resp, 503)
            assert resp.headers["Retry-After"]
        assert "database" in body["detail"]
        async with client.request("PUT", "/api/articles/x1", json=seed_article) as resp:
            await expect_problem(resp, 503)
        async with client.request("GET", "/healthz") as resp:
            assert resp.status == 200, "liveness does not depend on the database"
    finally:
        await set_outage(database_url, down=False)

    recovered = False
    for _ in range(50):
        async with client.request("GET", "/readyz") as resp:
            if resp.status == 200:
                recovered = True
                break
        await asyncio.sleep(0.2)
    assert recovered, "the service reconnects on its own"
    async with client.request("GET", "/api/articles/liver-calcification") as resp:
        assert resp.status == 200
    async with client.request("PUT", "/api/articles/x1", json={**seed_article, "id": "x1"}) as r:
        assert r.status == 201
