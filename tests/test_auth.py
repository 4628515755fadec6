"""Who may do what: no token, a partner token, an operator token."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Client, expect_problem

from storage import Storage

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
    from syndicate.auth import hash_token

    found = await store.get_token_by_hash(hash_token(tokens["operator"]))
    assert found is not None and found.role == "operator"
    assert await store.get_token_by_hash(tokens["operator"]) is None


async def test_revoked_token_is_refused(client: Client, store: Storage) -> None:
    async with client.request("GET", "/api/topics") as resp:
        assert resp.status == 200
    assert await store.revoke_token("test-operator") is not None
    async with client.request("GET", "/api/topics") as resp:
        await expect_problem(resp, 401)
