"""The articles API end to end: a real server, a real database of each backend."""

from __future__ import annotations

import copy
from typing import Any

from conftest import Client, error_fields, expect_problem

from storage import Storage


async def post(client: Client, article: dict[str, Any]) -> Any:
    return client.request("POST", "/api/articles", json=article)


async def test_create_and_read_back_seed_article(
    client: Client, store: Storage, seed_article: dict[str, Any]
) -> None:
    async with client.request("POST", "/api/articles", json=seed_article) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.headers["Location"] == "/api/articles/liver-calcification"
        created = await resp.json()
    async with client.request("GET", "/api/articles/liver-calcification") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == created
    assert body["topics"] == ["liver-health"]
    assert body["title"] == "What does liver calcification mean?"
    assert body["author"] == "Health desk"
    assert body["version"] == 1
    assert body["guid"].startswith("tag:127.0.0.1,20") and body["guid"].endswith(
        ":article/liver-calcification"
    )
    assert body["slug"] == "what-does-liver-calcification-mean"
    assert body["url"] == f"{client.base_url}/articles/what-does-liver-calcification-mean"
    assert body["published_at"].startswith("2026-11-21T08:00:00")
    assert "<h2>1. What is intrahepatic calcification?</h2>" in body["content"]
    assert body["summary"].endswith("…") and len(body["summary"]) <= 201
    events = await store.list_events()
    assert [(e.type, e.article_id) for e in events] == [
        ("article.published", "liver-calcification")
    ]
    assert events[0].data["version"] == 1


async def test_post_existing_id_conflicts(client: Client, seed_article: dict[str, Any]) -> None:
    async with client.request("POST", "/api/articles", json=seed_article) as resp:
        assert resp.status == 201
    changed = {**seed_article, "title": "Another title"}
    async with client.request("POST", "/api/articles", json=changed) as resp:
        body = await expect_problem(resp, 409)
    assert "liver-calcification" in body["detail"]
    async with client.request("GET", "/api/articles/liver-calcification") as resp:
        assert (await resp.json())["title"] == seed_article["title"]


async def test_post_without_id_generates_one(client: Client, seed_article: dict[str, Any]) -> None:
    article = {k: v for k, v in seed_article.items() if k != "id"}
    async with client.request("POST", "/api/articles", json=article) as resp:
        assert resp.status == 201
        body = await resp.json()
    assert body["id"]
    async with client.request("GET", resp.headers["Location"]) as resp:
        assert (await resp.json())["id"] == body["id"]


async def test_put_create_replace_and_unchanged(
    client: Client, store: Storage, seed_article: dict[str, Any]
) -> None:
    path = "/api/articles/liver-calcification"
    async with client.request("PUT", path, json=seed_article) as resp:
        assert resp.status == 201
        first = await resp.json()
    async with client.request("PUT", path, json=seed_article) as resp:
        assert resp.status == 200
        same = await resp.json()
    assert same["version"] == 1 and same["updated_at"] == first["updated_at"]
    assert len(await store.list_events()) == 1

    edited = {**seed_article, "title": "Liver calcification, explained"}
    async with client.request("PUT", path, json=edited) as resp:
        assert resp.status == 200
        second = await resp.json()
    assert second["version"] == 2
    assert second["guid"] == first["guid"]
    assert second["slug"] == first["slug"], "a replace keeps the published slug"
    assert second["published_at"] == first["published_at"]
    events = await store.list_events()
    assert [e.type for e in events] == ["article.published", "article.updated"]
    assert events[0].seq < events[1].seq
    assert events[1].data["title"] == "Liver calcification, explained"

    without_date = {k: v for k, v in edited.items() if k != "published_at"}
    async with client.request("PUT", path, json=without_date) as resp:
        assert resp.status == 200
        assert (await resp.json())["version"] == 2, "omitted published_at keeps the stored one"


async def test_put_id_must_match_path(client: Client, seed_article: dict[str, Any]) -> None:
    async with client.request("PUT", "/api/articles/other-id", json=seed_article) as resp:
        body = await expect_problem(resp, 422)
    assert error_fields(body) == {"id"}


async def test_delete_tombstones_and_pushes_event(
    client: Client, store: Storage, seed_article: dict[str, Any]
) -> None:
    path = "/api/articles/liver-calcification"
    async with client.request("PUT", path, json=seed_article) as resp:
        assert resp.status == 201
    async with client.request("DELETE", path) as resp:
        assert resp.status == 204
    async with client.request("GET", path) as resp:
        await expect_problem(resp, 410)
    async with client.request("GET", "/api/articles?topic=liver-health") as resp:
        assert (await resp.json())["articles"] == []
    async with client.request("DELETE", path) as resp:
        assert resp.status == 204
    events = await store.list_events()
    assert [e.type for e in events] == ["article.published", "article.deleted"]
    assert events[1].data["deleted_at"] is not None

    async with client.request("POST", "/api/articles", json=seed_article) as resp:
        await expect_problem(resp, 409)
    async with client.request("PUT", path, json=seed_article) as resp:
        assert resp.status == 201, "PUT brings a deleted article back"
        body = await resp.json()
    assert body["deleted_at"] is None and body["version"] == 3
    assert [e.type for e in await store.list_events()][-1] == "article.published"


async def test_delete_unknown_is_404(client: Client) -> None:
    async with client.request("DELETE", "/api/articles/nope") as resp:
        await expect_problem(resp, 404)
    async with client.request("GET", "/api/articles/nope") as resp:
        await expect_problem(resp, 404)


async def test_batch_stores_valid_items_and_reports_invalid(
    client: Client, store: Storage, seed_articles: list[dict[str, Any]]
) -> None:
    items: list[Any] = copy.deepcopy(seed_articles[:3])
    items.append({"id": "bad one", "title": "x", "content": "y", "topics": ["t"]})
    items.append({"title": "No topics", "content": "y", "topics": []})
    items.append("not an object")
    items.append(copy.deepcopy(seed_articles[0]))
    async with client.request("POST", "/api/articles/batch", json={"articles": items}) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert (body["created"], body["rejected"], body["updated"], body["unchanged"]) == (3, 4, 0, 0)
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["created"] * 3 + ["rejected"] * 4
    assert body["results"][3]["errors"][0]["field"] == "articles.3.id"
    assert body["results"][4]["errors"][0]["field"] == "articles.4.topics"
    assert body["results"][5]["errors"][0]["field"] == "articles.5"
    assert "duplicate" in body["results"][6]["errors"][0]["message"]
    stored = await store.list_articles(limit=10)
    assert {a.id for a in stored} == {a["id"] for a in seed_articles[:3]}

    items = copy.deepcopy(seed_articles[:2])
    items[1]["title"] = "Changed"
    async with client.request("POST", "/api/articles/batch", json={"articles": items}) as resp:
        body = await resp.json()
    assert [r["status"] for r in body["results"]] == ["unchanged", "updated"]
    assert len(await store.list_events()) == 4


async def test_batch_too_large(start_server: Any, tokens: dict[str, str]) -> None:
    client = await start_server(max_batch_size=2)
    client.token = tokens["operator"]
    article = {"title": "t", "content": "c", "topics": ["t"]}
    async with client.request(
        "POST", "/api/articles/batch", json={"articles": [article] * 3}
    ) as resp:
        await expect_problem(resp, 413)


async def test_pagination_is_stable_under_inserts(client: Client) -> None:
    for n in range(7):
        article = {
            "id": f"a{n}",
            "title": f"Article {n}",
            "content": "<p>x</p>",
            "topics": ["liver-health"],
            "published_at": f"2026-11-0{n + 1}T10:00:00Z",
        }
        async with client.request("POST", "/api/articles", json=article) as resp:
            assert resp.status == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "/api/articles?topic=liver-health&limit=3" + (f"&cursor={cursor}" if cursor else "")
        async with client.request("GET", query) as resp:
            assert resp.status == 200
            page = await resp.json()
        seen += [a["id"] for a in page["articles"]]
        pages += 1
        if pages == 1:
            newer = {"id": "new", "title": "New", "content": "x", "topics": ["liver-health"]}
            async with client.request("POST", "/api/articles", json=newer) as resp:
                assert resp.status == 201
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a6", "a5", "a4", "a3", "a2", "a1", "a0"]
    assert pages == 3


async def test_list_parameter_errors(client: Client) -> None:
    for query, field in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=1000", "limit"),
        ("cursor=!!!", "cursor"),
        ("cursor=bm90IGpzb24", "cursor"),
        ("topic=Not_A_Slug", "topic"),
    ]:
        async with client.request("GET", f"/api/articles?{query}") as resp:
            body = await expect_problem(resp, 422)
        assert error_fields(body) == {field}, query
    async with client.request("GET", "/api/articles?topic=no-such-topic") as resp:
        await expect_problem(resp, 404)


async def test_slugs_are_unique(client: Client) -> None:
    slugs = []
    for n in range(3):
        article = {"id": f"s{n}", "title": "Same title", "content": "x", "topics": ["t"]}
        async with client.request("POST", "/api/articles", json=article) as resp:
            slugs.append((await resp.json())["slug"])
    assert slugs == ["same-title", "same-title-2", "same-title-3"]
    article = {"id": "u", "title": "Café — ünïcode «title» 肝", "content": "x", "topics": ["t"]}
    async with client.request("POST", "/api/articles", json=article) as resp:
        assert (await resp.json())["slug"] == "cafe-unicode-title-肝"


async def test_topics_listed_and_managed(client: Client, seed_article: dict[str, Any]) -> None:
    async with client.request("POST", "/api/articles", json=seed_article) as resp:
        assert resp.status == 201
    async with client.request("GET", "/api/topics") as resp:
        topics = (await resp.json())["topics"]
    assert [(t["slug"], t["title"], t["article_count"]) for t in topics] == [
        ("liver-health", "Liver health", 1)
    ]
    body = {"title": "Liver Health & Hepatology", "description": "All about the liver."}
    async with client.request("PUT", "/api/topics/liver-health", json=body) as resp:
        assert resp.status == 200
        assert (await resp.json())["title"] == "Liver Health & Hepatology"
    async with client.request("PUT", "/api/topics/kidneys", json={}) as resp:
        assert resp.status == 201
        assert (await resp.json())["title"] == "Kidneys"
    async with client.request("PUT", "/api/topics/all", json={}) as resp:
        assert error_fields(await expect_problem(resp, 422)) == {"slug"}
    async with client.request("PUT", "/api/topics/kidneys", json={"colour": "red"}) as resp:
        assert error_fields(await expect_problem(resp, 422)) == {"colour"}
