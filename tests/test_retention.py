"""Retention of the change log: the background task prunes events older than
``event_retention`` (once fanned out and delivered), a position older than what is
kept gets 410 telling the partner to resync, and ``GET /api/articles?updated_since=``
is that resync: every article changed since then, tombstones included. Both backends."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from conftest import ServerFactory, error_fields, expect_problem
from test_event_ids import draft as event_draft

from storage import Storage
from storage.records import ArticleDraft, format_time, utcnow
from syndicate.core.settings import Settings
from syndicate.delivery.fanout import FANOUT_CURSORS
from syndicate.delivery.retention import Retention

RETENTION = 30 * 86400.0


def draft(article_id: str, **changes: Any) -> ArticleDraft:
    """test_event_ids' draft, published 50 days ago (older than the retention)."""
    return event_draft(article_id, **{"published_at": utcnow() - timedelta(days=50), **changes})


async def fanned_out(store: Storage) -> None:
    """Until every fan-out cursor has passed the last event (only then may it go)."""
    head = (await store.feed_state(None)).seq
    for _ in range(200):
        cursors = [await store.get_cursor(name) for name in FANOUT_CURSORS.values()]
        if min(cursors) >= head:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the fan-out did not pass the events")


async def test_pruned_positions_get_410_and_the_resync_lists_what_changed(
    store: Storage, start_server: ServerFactory, tokens: dict[str, str]
) -> None:
    now = utcnow()
    old = now - timedelta(days=40)
    await store.put_articles([draft("old-1"), draft("old-2")], now=old)
    await store.delete_article("old-2", now=old + timedelta(days=1))
    await store.put_article(draft("kept-1"), now=now - timedelta(days=2))
    client = await start_server(event_retention=RETENTION)
    client.token = tokens["partner"]
    await fanned_out(store)

    async with client.request("GET", "/api/events?limit=1") as resp:
        first = await resp.json()
    old_cursor, old_id = first["next_cursor"], first["events"][0]["id"]

    pruned = await Retention(store, Settings(event_retention=RETENTION)).run_once()
    assert pruned.events == 3
    assert await store.event_horizon() == 3
    assert (await Retention(store, Settings(event_retention=RETENTION)).run_once()).events == 0

    for after in (old_cursor, old_id):
        async with client.request("GET", f"/api/events?after={after}") as resp:
            problem = await expect_problem(resp, 410)
        assert error_fields(problem) == {"after"}
        assert "GET /api/articles?updated_since=" in problem["detail"]
    # Without a position: from the oldest event kept.
    async with client.request("GET", "/api/events") as resp:
        kept = await resp.json()
    assert [(e["type"], e["data"]["id"]) for e in kept["events"]] == [
        ("article.published", "kept-1")
    ]

    # The resync: every article changed since then, the deleted one too, oldest first.
    since = format_time(old - timedelta(hours=1))
    listed: list[dict[str, Any]] = []
    query = f"/api/articles?updated_since={since}&limit=2"
    async with client.request("GET", query) as resp:
        page = await resp.json()
    listed += page["articles"]
    async with client.request("GET", f"{query}&cursor={page['next_cursor']}") as resp:
        page = await resp.json()
    listed += page["articles"]
    assert page["next_cursor"] is None
    assert [(a["id"], a["status"]) for a in listed] == [
        ("old-1", "published"),
        ("old-2", "deleted"),
        ("kept-1", "published"),
    ]
    recent = format_time(now - timedelta(days=3))
    async with client.request("GET", f"/api/articles?updated_since={recent}") as resp:
        assert [a["id"] for a in (await resp.json())["articles"]] == ["kept-1"]


async def test_updated_since_refuses_what_it_cannot_use(
    store: Storage, start_server: ServerFactory, tokens: dict[str, str]
) -> None:
    client = await start_server()
    client.token = tokens["operator"]
    for query, field in [
        ("updated_since=yesterday", "updated_since"),
        ("updated_since=2026-01-01", "updated_since"),
        ("updated_since=2026-13-01T00:00:00Z", "updated_since"),
        ("updated_since=2026-01-01T00:00:00Z&topic=liver-health", "topic"),
        ("updated_since=2026-01-01T00:00:00Z&status=scheduled", "status"),
        ("updated_since=2026-01-01T00:00:00Z&cursor=bad", "cursor"),
    ]:
        async with client.request("GET", f"/api/articles?{query}") as resp:
            problem = await expect_problem(resp, 422)
        assert error_fields(problem) == {field}, query


async def test_the_background_task_prunes(store: Storage, start_server: ServerFactory) -> None:
    await store.put_article(draft("a"), now=utcnow() - timedelta(days=40))
    await store.put_article(draft("b"))
    await start_server()
    await fanned_out(store)
    retention = Retention(store, Settings(), start_delay=0, interval=0.05)
    task = asyncio.create_task(retention.run())
    try:
        for _ in range(100):
            if await store.event_horizon() == 1:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await store.event_horizon() == 1
    assert [e.article_id for e in await store.list_events()] == ["b"]
