"""Scheduled articles in storage, on every backend: a future published_at is stored
without an event, out of every listing and feed state, until publish_due announces it
exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from test_storage_contract import draft as contract_draft

from storage import Conflict, Storage, open_storage
from storage.records import ArticleDraft

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)


def draft(article_id: str = "s1", **changes: object) -> ArticleDraft:
    """The contract suite's draft, published an hour after ``T0`` unless told."""
    return contract_draft(article_id, **{"published_at": LATER, **changes})


async def test_a_future_article_is_stored_unseen_until_published(store: Storage) -> None:
    await store.put_article(draft("live", published_at=T0), now=T0)
    before = await store.feed_state("liver-health")
    everything_before = await store.feed_state(None)

    result = await store.put_article(draft(), now=T0)
    assert result.outcome == "created" and result.article.scheduled
    assert await store.get_article("s1") == result.article
    assert (await store.get_article_by_slug("slug-s1")).scheduled
    # Nobody is told: no event, no listing, no count, no feed change.
    assert [e.article_id for e in await store.list_events()] == ["live"]
    assert [a.id for a in await store.list_articles()] == ["live"]
    assert [a.id for a in await store.list_articles(topic="liver-health")] == ["live"]
    assert [a.id for a in await store.list_articles(after=(T0, "live"))] == []
    assert (await store.get_topic("liver-health")).article_count == 1
    assert await store.feed_state("liver-health") == before
    assert await store.feed_state(None) == everything_before
    assert await store.next_scheduled() == LATER

    # An edit of it is stored, still without an event.
    edited = await store.put_article(draft(title="Edited"), now=T0 + timedelta(minutes=1))
    assert edited.outcome == "updated" and edited.article.scheduled
    assert edited.article.version == 1  # versions count what readers could see
    assert len(await store.list_events()) == 1

    assert await store.publish_due(now=LATER - timedelta(seconds=1)) == []
    published = await store.publish_due(now=LATER + timedelta(seconds=2))
    assert [a.id for a in published] == ["s1"]
    article = published[0]
    assert not article.scheduled and article.title == "Edited"
    assert article.updated_at == LATER + timedelta(seconds=2)
    # Its edits while scheduled were never seen: its last change is its publication.
    assert article.version == 1 and article.modified_at == LATER
    assert await store.get_article("s1") == article
    events = await store.list_events()
    assert [(e.type, e.article_id) for e in events] == [
        ("article.published", "live"),
        ("article.published", "s1"),
    ]
    assert events[1].data["title"] == "Edited"
    assert [a.id for a in await store.list_articles(topic="liver-health")] == ["s1", "live"]
    assert (await store.get_topic("liver-health")).article_count == 2
    assert (await store.feed_state("liver-health")).seq == events[1].seq
    assert await store.next_scheduled() is None
    # Once only.
    assert await store.publish_due(now=LATER + timedelta(hours=1)) == []
    assert len(await store.list_events()) == 2


async def test_a_scheduled_article_given_a_past_time_is_published_by_the_write(
    store: Storage,
) -> None:
    await store.put_article(draft(), now=T0)
    result = await store.put_article(draft(published_at=T0), now=T0 + timedelta(minutes=5))
    assert result.outcome == "updated" and not result.article.scheduled
    assert [e.type for e in await store.list_events()] == ["article.published"]
    assert [a.id for a in await store.list_articles(topic="liver-health")] == ["s1"]
    assert await store.publish_due(now=LATER) == []


async def test_a_published_article_cannot_be_rescheduled(store: Storage) -> None:
    await store.put_article(draft(published_at=T0), now=T0)
    with pytest.raises(Conflict, match="already published"):
        await store.put_article(draft(published_at=LATER), now=T0)
    with pytest.raises(Conflict, match="already published"):
        await store.put_articles([draft(published_at=LATER)], now=T0)
    assert not (await store.get_article("s1")).scheduled
    assert len(await store.list_events()) == 1


async def test_deleting_a_scheduled_article_tells_nobody(store: Storage) -> None:
    await store.put_article(draft(), now=T0)
    tomb = await store.delete_article("s1", now=T0 + timedelta(minutes=1))
    assert tomb.deleted and tomb.scheduled
    assert await store.list_events() == []
    assert await store.list_deleted(since=T0) == []
    assert await store.next_scheduled() is None
    assert await store.publish_due(now=LATER) == []
    assert (await store.get_article("s1")).deleted


async def test_a_batch_mixes_scheduled_and_live_writes(store: Storage) -> None:
    drafts = [draft("now", published_at=T0), draft("soon")]
    drafts.append(draft("now", title="Again", published_at=T0))
    results = await store.put_articles(drafts, now=T0)
    assert [(r.outcome, r.article.scheduled) for r in results] == [
        ("created", False),
        ("created", True),
        ("updated", False),
    ]
    events = await store.list_events()
    assert [(e.type, e.article_id) for e in events] == [
        ("article.published", "now"),
        ("article.updated", "now"),
    ]
    assert (await store.get_topic("liver-health")).article_count == 1


async def test_two_processes_publish_a_due_article_once(database_url: str) -> None:
    first = await open_storage(database_url)
    second = await open_storage(database_url)
    try:
        for n in range(20):
            await first.put_article(draft(f"s{n}"), now=T0)
        due = LATER + timedelta(seconds=1)
        batches = await asyncio.gather(
            *(s.publish_due(now=due, limit=7) for s in (first, second, first, second))
        )
        published = sorted(a.id for batch in batches for a in batch)
        rest = await first.publish_due(now=due)
        everything = sorted(published + [a.id for a in rest])
        assert everything == sorted(f"s{n}" for n in range(20))
        events = await second.list_events()
        assert sorted(e.article_id for e in events) == everything
        assert all(e.type == "article.published" for e in events)
    finally:
        await first.close()
        await second.close()


async def test_the_operator_lists_scheduled_articles(store: Storage) -> None:
    await store.put_article(draft("live", published_at=T0), now=T0)
    for n in range(3):
        topics = ("liver-health",) if n % 2 == 0 else ("kidney-health",)
        when = LATER + timedelta(minutes=n)
        await store.put_article(draft(f"s{n}", published_at=when, topics=topics), now=T0)
    await store.put_article(draft("gone"), now=T0)
    await store.delete_article("gone", now=T0)

    everything = await store.list_articles(scheduled=True)
    assert [a.id for a in everything] == ["s2", "s1", "s0"]
    assert all(a.scheduled for a in everything)
    liver = await store.list_articles(topic="liver-health", scheduled=True)
    assert [a.id for a in liver] == ["s2", "s0"]
    first = await store.list_articles(scheduled=True, limit=1)
    rest = await store.list_articles(scheduled=True, before=(first[0].published_at, first[0].id))
    assert [a.id for a in first + rest] == ["s2", "s1", "s0"]
    await store.publish_due(now=LATER + timedelta(minutes=1))
    assert [a.id for a in await store.list_articles(scheduled=True)] == ["s2"]


async def test_the_first_base_url_stored_wins(store: Storage) -> None:
    assert await store.site_setting("base_url") is None
    assert await store.claim_site_setting("base_url", "https://a.example") == "https://a.example"
    assert await store.claim_site_setting("base_url", "https://b.example") == "https://a.example"
    await store.set_site_setting("base_url", "https://c.example")
    assert await store.site_setting("base_url") == "https://c.example"
