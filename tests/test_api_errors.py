"""Bad input gets a clear problem+json answer and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Client, ServerFactory, error_fields, expect_problem

from storage import Storage

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b'{"title": "x",', JSON, 400),
        (b"", JSON, 400),
        (b'{"title": "\xff\xfe"}', JSON, 400),
        (b"[" * 100_000 + b"]" * 100_000, JSON, 400),
        (b'{"title": "x"}', {"Content-Type": "text/plain"}, 415),
        (b'{"title": "x"}', {}, 415),
        (b"[1, 2]", JSON, 422),
        (b'"just a string"', JSON, 422),
    ],
    ids=[
        "truncated",
        "empty",
        "invalid-utf8",
        "deep-nesting",
        "text-plain",
        "no-type",
        "array",
        "string",
    ],
)
async def test_malformed_bodies(
    client: Client, store: Storage, body: bytes, headers: dict[str, str], status: int
) -> None:
    async with client.request("POST", "/api/articles", data=body, headers=headers) as resp:
        await expect_problem(resp, status)
    assert await store.list_events() == []


async def test_body_over_the_limit_is_413(
    start_server: ServerFactory, tokens: dict[str, str], store: Storage
) -> None:
    client = await start_server(max_body_size=10_000)
    client.token = tokens["operator"]
    article = {"title": "Big", "content": "x" * 20_000, "topics": ["t"]}
    async with client.request("POST", "/api/articles", json=article) as resp:
        await expect_problem(resp, 413)
    article["content"] = "x" * 5_000
    async with client.request("POST", "/api/articles", json=article) as resp:
        assert resp.status == 201


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"surprise": 1}, {"surprise"}),
        ({"title": 42}, {"title"}),
        ({"title": "   "}, {"title"}),
        ({"topics": []}, {"topics"}),
        ({"topics": ["Liver Health"]}, {"topics"}),
        ({"topics": ["all"]}, {"topics"}),
        ({"topics": [f"t{n}" for n in range(21)]}, {"topics"}),
        ({"id": "../etc/passwd"}, {"id"}),
        ({"id": ".."}, {"id"}),
        ({"id": "x" * 129}, {"id"}),
        ({"content_type": "pdf"}, {"content_type"}),
        ({"published_at": "yesterday"}, {"published_at"}),
        ({"url": "javascript:alert(1)"}, {"url"}),
        ({"image": "/relative.png"}, {"image"}),
        ({"language": "english please"}, {"language"}),
        ({"title": None, "content": None}, {"title", "content"}),
    ],
)
async def test_invalid_fields_are_named(
    client: Client,
    store: Storage,
    seed_article: dict[str, Any],
    change: dict[str, Any],
    fields: set[str],
) -> None:
    async with client.request("POST", "/api/articles", json={**seed_article, **change}) as resp:
        body = await expect_problem(resp, 422)
    assert error_fields(body) == fields
    assert all(e["message"] for e in body["errors"])
    assert await store.list_events() == []


async def test_path_ids_are_checked(client: Client, seed_article: dict[str, Any]) -> None:
    async with client.request("PUT", "/api/articles/..", json=seed_article) as resp:
        assert resp.status in (404, 422)
    async with client.request("GET", "/api/articles/a%20b") as resp:
        assert error_fields(await expect_problem(resp, 422)) == {"id"}


async def test_unknown_route_and_method_are_problems(client: Client) -> None:
    async with client.request("GET", "/api/nothing-here") as resp:
        await expect_problem(resp, 404)
    async with client.request("PATCH", "/api/articles") as resp:
        body = await expect_problem(resp, 405)
        assert "GET" in resp.headers["Allow"]
    assert body["status"] == 405


async def test_unknown_query_parameters_are_named(
    client: Client, store: Storage, seed_article: dict[str, Any]
) -> None:
    async with client.request("POST", "/api/articles", json=seed_article) as resp:
        assert resp.status == 201
    # A typo must not silently widen a listing: ?topc= is refused, naming it.
    async with client.request("GET", "/api/articles?topc=liver-health&limit=5") as resp:
        body = await expect_problem(resp, 422)
    assert error_fields(body) == {"topc"} and "topic" in body["errors"][0]["message"]
    async with client.request("GET", "/api/subscriptions?owner=me") as resp:
        assert error_fields(await expect_problem(resp, 422)) == {"owner"}
    async with client.request("DELETE", f"/api/articles/{seed_article['id']}?force=1") as resp:
        assert error_fields(await expect_problem(resp, 422)) == {"force"}
    assert not (await store.get_article(seed_article["id"])).deleted  # nothing deleted
    # Authentication still answers first, and known parameters still work.
    async with client.request("GET", "/api/articles?topc=x", token="") as resp:
        await expect_problem(resp, 401)
    async with client.request("GET", "/api/articles?limit=1") as resp:
        assert resp.status == 200 and len((await resp.json())["articles"]) == 1


async def test_blank_topic_title_is_refused(client: Client) -> None:
    # Unicode spaces and control characters only: nothing a reader could see.
    body = {"title": "\u0010\u00a0\u200a\u0097"}
    async with client.request("PUT", "/api/topics/liver-health", json=body) as resp:
        assert error_fields(await expect_problem(resp, 422)) == {"title"}
    body = {"title": "  Liver\u00a0 health\n"}
    async with client.request("PUT", "/api/topics/liver-health", json=body) as resp:
        assert resp.status in (200, 201) and (await resp.json())["title"] == "Liver health"


async def test_control_characters_are_cleaned(client: Client) -> None:
    article = {
        "id": "ctl",
        "title": "Nul\u0000 and\u0007 bell\ufffe",
        "content": "<p>a\u0001b\u000bc\ud800d</p>",
        "summary": "tab\tkept, \u001bescape gone",
        "author": "A\u0000uthor",
        "topics": ["t"],
    }
    async with client.request("POST", "/api/articles", json=article) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    assert body["title"] == "Nul and bell"
    assert body["content"] == "<p>abcd</p>"
    assert body["summary"] == "tab kept, escape gone"
    assert body["author"] == "Author"


async def test_topic_cap_is_configurable(
    start_server: ServerFactory, tokens: dict[str, str], store: Storage
) -> None:
    client = await start_server(max_topics=2)
    client.token = tokens["operator"]
    article = {"id": "t3", "title": "T", "content": "c", "topics": ["a", "b", "c"]}
    async with client.request("POST", "/api/articles", json=article) as resp:
        body = await expect_problem(resp, 422)
    assert error_fields(body) == {"topics"} and "at most 2" in body["detail"]
    async with client.request("POST", "/api/articles/batch", json={"articles": [article]}) as r:
        assert (await r.json())["results"][0]["errors"][0]["field"] == "articles.0.topics"
    article["topics"] = ["a", "b"]
    async with client.request("PUT", "/api/articles/t3", json=article) as resp:
        assert resp.status == 201
    assert [e.article_id for e in await store.list_events()] == ["t3"]


async def test_dates_past_the_calendar_in_utc_are_named_not_a_crash(
    client: Client, store: Storage, seed_article: dict[str, Any]
) -> None:
    """A time with an offset whose UTC form falls outside years 1-9999 was a 500 (an
    OverflowError while converting); one item of a batch failed the whole batch."""
    for edge in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        article = {**seed_article, "published_at": edge}
        async with client.request("POST", "/api/articles", json=article) as resp:
            body = await expect_problem(resp, 422)
            assert error_fields(body) == {"published_at"}
            assert "out of range" in body["detail"]
    later = {**seed_article, "id": "later", "published_at": "0001-01-01T00:00:00+14:00"}
    batch = {"articles": [seed_article, later]}
    async with client.request("POST", "/api/articles/batch", json=batch) as resp:
        assert resp.status == 200, await resp.text()
        results = (await resp.json())["results"]
    assert [r["status"] for r in results] == ["created", "rejected"]
    assert len(await store.list_events()) == 1


async def test_delivery_ids_past_64_bits_are_not_a_server_error(
    start_server: ServerFactory, tokens: dict[str, str]
) -> None:
    """A cursor or delivery id beyond what the database can hold was a 500 (SQLite:
    OverflowError) or a 503 "database failed" (PostgreSQL); so was '²', which Python's
    isdigit() accepts and int() refuses."""
    client = await start_server(allow_private_targets=True)
    client.token = tokens["operator"]
    body = {"url": "http://127.0.0.1:9/hook", "topics": ["liver-health"]}
    async with client.request("POST", "/api/subscriptions", json=body) as resp:
        assert resp.status == 201, await resp.text()
        sub = (await resp.json())["id"]
    for bad in ("99999999999999999999999", str(2**63), "²"):
        async with client.request(
            "GET", f"/api/subscriptions/{sub}/deliveries", params={"cursor": bad}
        ) as resp:
            assert error_fields(await expect_problem(resp, 422)) == {"cursor"}
        async with client.request(
            "POST", f"/api/subscriptions/{sub}/deliveries/{bad}/retry"
        ) as resp:
            await expect_problem(resp, 404)
    since = {"since": "0001-01-01T00:00:00+14:00"}
    async with client.request("POST", f"/api/subscriptions/{sub}/recover", json=since) as resp:
        assert error_fields(await expect_problem(resp, 422)) == {"since"}


@pytest.mark.parametrize(
    "published_at",
    [
        "2026-11-20",
        "2026-11-20T08:00:00",
        "2026-11-20T08:00Z",
        "1900-01-01T00:00:00Z",
        "2200-01-01T00:00:00Z",
    ],
    ids=["date-only", "no-offset", "no-seconds", "1900", "2200"],
)
async def test_published_at_is_a_full_rfc3339_time_in_sane_bounds(
    client: Client, store: Storage, seed_article: dict[str, Any], published_at: str
) -> None:
    """Issue 20, finding 6: a date alone, a time without an offset and a 1900-01-01
    placeholder were stored (as midnight, as UTC, as 1900)."""
    article = {**seed_article, "published_at": published_at}
    async with client.request("POST", "/api/articles", json=article) as resp:
        assert error_fields(await expect_problem(resp, 422)) == {"published_at"}
    assert await store.list_events() == []
