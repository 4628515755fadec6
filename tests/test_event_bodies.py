"""Webhook bodies are built without pydantic, and stored with their events.

The article in a webhook's ``data`` (and in every pull and stream item, the same
bytes) is the article as ``GET /api/articles/{id}`` answers it: built directly from
the ``Article`` (``webhooks.article_json``), it must stay equal to the documented
model's dump (``ArticleOut``) over the adversarial corpus and the fixture articles,
published, updated and deleted. Both backends; articles written through the API.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from conftest import FIXTURES, Client

from storage import Storage
from storage.records import Article, Event
from syndicate.content.articles import deleted_article_json
from syndicate.content.responses import ArticleOut
from syndicate.delivery import webhooks

CORPUS: dict[str, Any] = json.loads((FIXTURES / "corpus.json").read_text("utf-8"))


async def _post_all(client: Client, seed_articles: list[dict[str, Any]]) -> list[str]:
    """Every corpus and fixture article through the API; the ids stored."""
    ids = []
    for article in [*CORPUS["articles"], *seed_articles]:
        async with client.request("POST", "/api/articles", json=article) as resp:
            assert resp.status == 201, (article["id"], await resp.text())
            ids.append((await resp.json())["id"])
    return ids


def _expected(event: Event, base_url: str) -> dict[str, Any]:
    """The event's body as the documented models make it."""
    article = Article.from_json(event.data)
    data = (
        deleted_article_json(article)
        if event.type == "article.deleted"
        else ArticleOut.of(article, base_url).model_dump(mode="json")
    )
    return {"type": event.type, "timestamp": event.created_at, "data": data}


async def _all_events(store: Storage) -> list[Event]:
    events = await store.list_events(after=0, limit=1000)
    assert len(events) < 1000
    return events


async def test_article_json_is_the_api_model(
    client: Client, store: Storage, seed_articles: list[dict[str, Any]]
) -> None:
    base = client.base_url
    ids = await _post_all(client, seed_articles)
    edited = ids[0]
    async with client.request(
        "PUT",
        f"/api/articles/{edited}",
        json={**CORPUS["articles"][0], "title": "Edited <b>title</b> \u00e9"},
    ) as resp:
        assert resp.status == 200, await resp.text()
    for gone in ids[1:4]:
        async with client.request("DELETE", f"/api/articles/{gone}") as resp:
            assert resp.status == 204
    for article_id in ids:
        article = await store.get_article(article_id)
        assert webhooks.article_json(article, base) == ArticleOut.of(article, base).model_dump(
            mode="json"
        ), article_id
        async with client.request("GET", f"/api/articles/{article_id}") as resp:
            if resp.status == 200:
                assert await resp.json() == webhooks.article_json(article, base), article_id
    events = await _all_events(store)
    assert {e.type for e in events} == {"article.published", "article.updated", "article.deleted"}
    for event in events:
        body = orjson.loads(webhooks.event_body(event, base))
        expected = _expected(event, base)
        expected["timestamp"] = body["timestamp"]
        assert body == expected, event.article_id
        # Same keys in the same order as the model's dump, too.
        assert list(body["data"]) == list(expected["data"]), event.article_id


@pytest.mark.parametrize("scheduled", [False, True])
def test_status_follows_the_model(scheduled: bool) -> None:
    when = datetime(2026, 12, 1, tzinfo=UTC)
    article = Article(
        id="a",
        guid="tag:x,2026:article/a",
        slug="a b/c",
        title="T",
        summary="S",
        content="<p>C</p>",
        content_type="html",
        topics=("t",),
        author=None,
        url=None,
        image=None,
        language=None,
        published_at=when,
        updated_at=when,
        created_at=when,
        version=1,
        scheduled=scheduled,
    )
    base = "http://example.org"
    assert webhooks.article_json(article, base) == ArticleOut.of(article, base).model_dump(
        mode="json"
    )
