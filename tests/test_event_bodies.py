"""Webhook bodies are built without pydantic, and stored with their events.

The article in a webhook's ``data`` (and in every pull and stream item, the same
bytes) is the article as ``GET /api/articles/{id}`` answers it: built directly from
the ``Article`` (``webhooks.article_json``), it must stay equal to the documented
model's dump (``ArticleOut``) over the adversarial corpus and the fixture articles,
published, updated and deleted. Both backends; articles written through the API.

Each event is stored with its body when a renderer is set (every process that
writes sets one): by every path that writes events, the stored bytes are the ones
rendering its snapshot gives; events without one are rendered when read, and a log
holding both reads the same.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from conftest import FIXTURES, Client
from test_cli import run
from test_event_ids import T0, draft, write_changes

from storage import Storage, open_storage
from storage.records import Article, Event
from syndicate.content.articles import deleted_article_json
from syndicate.content.responses import ArticleOut
from syndicate.core.names import SITE_BASE_URL
from syndicate.delivery import webhooks
from syndicate.web.changelog import EVERYTHING, ChangeLog, render

BASE = "https://health.example.org"

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


def _rendered(event: Event) -> bytes:
    """The body rendered from the event's snapshot, as for an event stored without."""
    return webhooks.event_body(dataclasses.replace(event, body=None), BASE)


async def test_every_event_write_stores_its_body(store: Storage) -> None:
    """A batch (SQLite builds the snapshots in SQL), one write holding two versions of
    an article, an update, a deletion and a scheduled article's publication: each
    event's stored body is what its snapshot renders to, and every read gives it."""
    store.set_event_renderer(webhooks.body_renderer(BASE))
    await write_changes(store)
    later = T0 + timedelta(days=1)
    await store.put_article(draft("s", published_at=later), now=T0)
    assert [a.id for a in await store.publish_due(now=later)] == ["s"]
    events = await _all_events(store)
    assert len(events) == 8
    assert {e.type for e in events} == {"article.published", "article.updated", "article.deleted"}
    for event in events:
        assert event.body is not None, event
        assert event.body == _rendered(event), event.article_id
    items = await store.list_event_items(after=0, limit=100)
    assert items == [(e.seq, e.id, e.type, e.topics, e.body) for e in events]
    by_seq = await store.get_events([e.seq for e in events])
    assert [by_seq[e.seq].body for e in events] == [e.body for e in events]
    # Paging: after and limit as list_events takes them.
    page = await store.list_event_items(after=events[2].seq, limit=3)
    assert [seq for seq, *_ in page] == [e.seq for e in events[3:6]]


async def test_events_without_a_body_read_the_same(store: Storage) -> None:
    """Events written with no renderer (older rows, a process without one) keep a NULL
    body and carry their snapshot; a log holding both kinds reads, through the
    ChangeLog, the same items as rendering every snapshot."""
    await store.put_articles([draft("a"), draft("b")], now=T0)
    store.set_event_renderer(webhooks.body_renderer(BASE))
    await store.put_articles([draft("c"), draft("d")], now=T0)
    await store.delete_article("a", now=T0 + timedelta(hours=1))
    store.set_event_renderer(None)
    await store.put_article(draft("e"), now=T0)
    events = await _all_events(store)
    assert [e.body is not None for e in events] == [False, False, True, True, True, False]
    items = await store.list_event_items(after=0, limit=100)
    assert [body for *_, body in items] == [e.body for e in events]
    log = ChangeLog(store, BASE, window_items=2)
    await log.start()
    try:
        page = await log.read(0, EVERYTHING, 100)
    finally:
        await log.stop()
    assert [i.body for i in page.items] == [
        render(dataclasses.replace(e, body=None), BASE).body for e in events
    ]
    for item in page.items:
        assert orjson.loads(item.body)["id"] == item.id


async def test_serve_stores_the_bodies_it_pushes(client: Client, store: Storage) -> None:
    """The app sets the renderer with its base URL: an article POSTed is stored with
    the body a push of it carries."""
    async with client.request("POST", "/api/articles", json=CORPUS["articles"][0]) as resp:
        assert resp.status == 201, await resp.text()
    (event,) = await _all_events(store)
    assert event.body is not None
    assert event.body == webhooks.event_body(dataclasses.replace(event, body=None), client.base_url)


async def test_import_stores_the_bodies(database_url: str) -> None:
    """``syndicate import`` writes events too: with their bodies, rendered with the
    database's base URL."""
    code, _, err = await run(
        "import",
        str(FIXTURES / "articles.json"),
        "--database",
        database_url,
        "--no-progress",
        "--create",
    )
    assert code == 0, err
    store = await open_storage(database_url)
    try:
        base = await store.site_setting(SITE_BASE_URL)
        assert base is not None
        events = await _all_events(store)
        assert len(events) == 18
        for event in events:
            assert event.body is not None
            assert event.body == webhooks.event_body(dataclasses.replace(event, body=None), base)
    finally:
        await store.close()
