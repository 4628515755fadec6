"""Who may do what: no token, a partner token, an operator token."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from conftest import Client, expect_problem

from storage import Storage, open_storage
from syndicate.web.auth import create_token, hash_token

ARTICLE = {"id": "a1", "title": "T", "content": "c", "topics": ["t"]}
WRITES = [
    ("POST", "/api/articles", ARTICLE),
    ("PUT", "/api/articles/a1", ARTICLE),
    ("POST", "/api/articles/batch", {"articles": [ARTICLE]}),
    ("DELETE", "/api/articles/a1", None),
    ("PUT", "/api/topics/t", {"title": "T"}),
]
READS = [
    ("GET", "/api/articles/a1"),
    ("GET", "/api/articles"),
    ("GET", "/api/topics"),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_writes_need_an_operator(
    client: Client, tokens: dict[str, str], store: Storage, method: str, path: str, body: Any
) -> None:
    async with client.request(method, path, json=body, token="") as resp:
        await expect_problem(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with client.request(method, path, json=body, token="syn_not-a-real-token") as resp:
        await expect_problem(resp, 401)
    async with client.request(
        method, path, json=body, headers={"Authorization": f"Basic {tokens['operator']}"}
    ) as resp:
        await expect_problem(resp, 401)
    async with client.request(method, path, json=body, token=tokens["partner"]) as resp:
        await expect_problem(resp, 403)
    assert await store.list_events() == []


@pytest.mark.parametrize(("method", "path"), READS)
async def test_reads_need_any_valid_token(
    client: Client, tokens: dict[str, str], method: str, path: str
) -> None:
    async with client.request("PUT", "/api/articles/a1", json=ARTICLE) as resp:
        assert resp.status == 201
    async with client.request(method, path, token="") as resp:
        await expect_problem(resp, 401)
    for role in ("partner", "operator"):
        async with client.request(method, path, token=tokens[role]) as resp:
            assert resp.status == 200, role


async def test_tokens_are_stored_hashed(store: Storage, tokens: dict[str, str]) -> None:
    from syndicate.web.auth import hash_token

    found = await store.get_token_by_hash(hash_token(tokens["operator"]))
    assert found is not None and found.role == "operator"
    assert await store.get_token_by_hash(tokens["operator"]) is None


async def test_revoked_token_is_refused(client: Client, store: Storage) -> None:
    async with client.request("GET", "/api/topics") as resp:
        assert resp.status == 200
    assert await store.revoke_token("test-operator") is not None
    async with client.request("GET", "/api/topics") as resp:
        await expect_problem(resp, 401)


async def _refused_within(store: Storage, token_hash: str, seconds: float) -> float:
    """How long until ``store`` stops accepting the token (fails after ``seconds``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while await store.get_token_by_hash(token_hash) is not None:
        assert loop.time() - start < seconds, f"a revoked token still accepted after {seconds}s"
        await asyncio.sleep(0.005)
    return loop.time() - start


async def _in_use(store: Storage, token_hash: str) -> None:
    """Use the token for a while, as a busy service does (PostgreSQL: it is cached)."""
    for _ in range(20):
        assert await store.get_token_by_hash(token_hash) is not None
        await asyncio.sleep(0.01)


async def test_revocation_by_another_process_is_seen_at_once(
    database_url: str, store: Storage
) -> None:
    secret, _ = await create_token(store, name="ops", role="operator")
    token_hash = hash_token(secret)
    await _in_use(store, token_hash)
    other = await open_storage(database_url)  # what `syndicate token revoke` opens
    try:
        assert await other.revoke_token("ops") is not None
        assert await _refused_within(store, token_hash, 1.0) < 0.5
        secret2, _ = await create_token(other, name="ops2", role="operator")
        assert await store.get_token_by_hash(hash_token(secret2)) is not None, "new tokens work"
    finally:
        await other.close()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_revocation_while_the_listen_connection_is_down(
    database_url: str, store: Storage
) -> None:
    """The token cache listens for revocations; if that connection dies, a revocation
    sent meanwhile is missed, so the cache must not be trusted until it is back."""
    secret, _ = await create_token(store, name="ops", role="operator")
    token_hash = hash_token(secret)
    await _in_use(store, token_hash)
    conn = await asyncpg.connect(database_url)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert killed == 1, "the service listens for revocations on one connection"
        await conn.execute(
            "UPDATE tokens SET revoked_at = now() WHERE name = 'ops'"
        )  # and no NOTIFY: as if it came while nobody listened
    finally:
        await conn.close()
    await _refused_within(store, token_hash, 1.0)
    await _in_use(store, hash_token((await create_token(store, name="b", role="partner"))[0]))
    assert await store.get_token_by_hash(token_hash) is None
