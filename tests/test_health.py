from __future__ import annotations

from conftest import Client


async def test_health_and_readiness(client: Client) -> None:
    async with client.request("GET", "/healthz", token="") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
    async with client.request("GET", "/readyz", token="") as resp:
        assert resp.status == 200
        assert (await resp.json())["database"] == "ok"
