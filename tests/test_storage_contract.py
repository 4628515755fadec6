"""One contract, every backend: each storage verb behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from storage import (
    ArticleExists,
    ArticleNotFound,
    Conflict,
    DeliveryNotFound,
    Storage,
    SubscriptionNotFound,
    TokenAlreadyRevoked,
    TokenExists,
    TokenNameKeepsRole,
    TopicNotFound,
    open_storage,
)
from storage.records import Article, ArticleDraft, format_time
from storage.sqlite import path_from_url

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["fast", "plain"])
def paths(request: pytest.FixtureRequest) -> str:
    """Each backend with its speed-up that reaches into private internals ("fast":
    SQLite's WAL index read from shared memory, PostgreSQL's records built without
    their constructor) and without it ("plain")."""
    return str(request.param)


@pytest.fixture
async def store(database_url: str, paths: str) -> AsyncIterator[Storage]:
    storage = await open_storage(database_url, fast_paths=paths == "fast")
    yield storage
    await storage.close()


def draft(article_id: str = "a1", **changes: object) -> ArticleDraft:
    base = ArticleDraft(
        id=article_id,
        guid=f"tag:example.org,2026:article/{article_id}",
        slug=f"slug-{article_id}",
        title=f"Title {article_id}",
        summary="Summary",
        content="<p>Body</p>",
        content_type="html",
        topics=("liver-health",),
        published_at=T0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def test_put_get_and_events(store: Storage) -> None:
    created = await store.put_article(draft(), now=T0)
    assert created.outcome == "created"
    article = created.article
    assert (article.version, article.created_at, article.updated_at) == (1, T0, T0)
    assert article.published_at == T0 and article.published_at.tzinfo is not None
    assert await store.get_article("a1") == article
    assert await store.get_article_by_slug("slug-a1") == article

    same = await store.put_article(draft(), now=T0 + timedelta(hours=1))
    assert same.outcome == "unchanged" and same.article == article

    later = T0 + timedelta(hours=2)
    updated = await store.put_article(draft(title="New", author="Ann"), now=later)
    assert updated.outcome == "updated"
    assert (updated.article.version, updated.article.updated_at) == (2, later)
    assert updated.article.guid == article.guid and updated.article.created_at == T0

    events = await store.list_events()
    assert [(e.type, e.article_id, e.topics) for e in events] == [
        ("article.published", "a1", ("liver-health",)),
        ("article.updated", "a1", ("liver-health",)),
    ]
    assert events[0].seq < events[1].seq
    assert events[1].data["title"] == "New" and events[1].data["version"] == 2
    # The snapshot is the whole article as it was: every field, read back exactly.
    assert Article.from_json(events[1].data) == updated.article
    assert Article.from_json(events[0].data) == article
    # All but ``scheduled``: an event is of an announced article, never a scheduled one.
    assert set(events[1].data) == {f.name for f in dataclasses.fields(Article)} - {"scheduled"}
    assert events[1].created_at == later
    assert await store.list_events(after=events[0].seq) == events[1:]
    assert await store.list_events(limit=1) == events[:1]
    heads = await store.list_events(with_data=False)
    assert heads == [dataclasses.replace(e, data={}) for e in events]
    # Each event's own id (the webhook-id): msg_ + a UUIDv7, one per event.
    assert all(
        re.fullmatch(r"msg_[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}", e.id) for e in events
    )
    assert len({e.id for e in events}) == 2
    assert await store.get_events([e.seq for e in events]) == {e.seq: e for e in events}
    assert await store.get_event_ids([e.seq for e in events]) == {e.seq: e.id for e in events}
    assert await store.get_event_ids([]) == {}


async def test_event_snapshots_are_the_whole_article(store: Storage) -> None:
    # Every field distinct from the others, times with microseconds: a snapshot
    # that swapped or dropped anything would not read back as the article.
    full = draft(
        "full",
        url="https://example.org/full",
        image="https://example.org/full.png",
        language="en",
        author="Ann",
        topics=("liver-health", "diabetes"),
        published_at=T0 - timedelta(days=3, microseconds=123_456),
    )
    now = T0 + timedelta(microseconds=654_321)
    written = await store.put_article(full, now=now)
    deleted = await store.delete_article("full", now=now + timedelta(hours=1, microseconds=1))
    events = await store.list_events()
    assert [Article.from_json(e.data) for e in events] == [written.article, deleted]
    assert len({deleted.published_at, deleted.created_at, deleted.updated_at}) == 3
    # The very text partners get: times as format_time writes them, nothing extra.
    assert [e.data for e in events] == [written.article.to_json(), deleted.to_json()]


async def test_batch_snapshots_are_exact_whatever_the_text(store: Storage) -> None:
    """A batch's snapshots, however the backend builds them, are ``to_json`` of
    each article: quotes, backslashes, newlines, non-ASCII text, an early year."""
    odd = '<p class="x">C:\\dir "quoted"\nline\ttab é 肝 \U0001f600 &amp; </p>'
    drafts = [
        draft("plain"),
        draft("odd", content=odd, title='T "q" \\', author=None, summary="é\n"),
        draft(
            "early",
            published_at=datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
            topics=("liver-health", "diabetes", "nutrition"),
        ),
    ]
    now = T0 + timedelta(microseconds=7)
    results = await store.put_articles(drafts, now=now)
    events = await store.list_events()
    assert [e.data for e in events] == [r.article.to_json() for r in results]
    assert events[2].data["published_at"] == "0999-01-02T03:04:05.000006Z"
    assert events[1].data["content"] == odd


async def test_create_only_conflicts(store: Storage) -> None:
    await store.put_article(draft())
    with pytest.raises(ArticleExists):
        await store.put_article(draft(title="Other"), create_only=True)
    assert (await store.get_article("a1")).title == "Title a1"
    assert len(await store.list_events()) == 1


async def test_slugs_unique_and_kept(store: Storage) -> None:
    await store.put_article(draft("a1", slug="same"))
    second = await store.put_article(draft("a2", slug="same"))
    assert second.article.slug == "same-2"
    replaced = await store.put_article(draft("a2", slug="same", title="Changed"))
    assert replaced.article.slug == "same-2", "a derived slug does not move on replace"
    moved = await store.put_article(draft("a2", slug="chosen", slug_explicit=True))
    assert moved.article.slug == "chosen"


async def test_delete_tombstone_and_revive(store: Storage) -> None:
    await store.put_article(draft(), now=T0)
    gone_at = T0 + timedelta(days=1)
    tomb = await store.delete_article("a1", now=gone_at)
    assert tomb.deleted_at == gone_at and tomb.version == 2
    assert (await store.get_article("a1")).deleted_at == gone_at
    assert await store.list_articles() == []
    assert await store.list_articles(topic="liver-health") == []
    again = await store.delete_article("a1", now=gone_at + timedelta(hours=1))
    assert again == tomb
    assert [e.type for e in await store.list_events()] == ["article.published", "article.deleted"]
    with pytest.raises(ArticleNotFound):
        await store.delete_article("missing")
    with pytest.raises(ArticleNotFound):
        await store.get_article("missing")
    with pytest.raises(ArticleExists):
        await store.put_article(draft(), create_only=True)
    revived = await store.put_article(draft(), now=gone_at + timedelta(days=1))
    assert revived.outcome == "created" and revived.article.deleted_at is None
    assert revived.article.version == 3
    assert [a.id for a in await store.list_articles(topic="liver-health")] == ["a1"]
    assert (await store.list_events())[-1].type == "article.published"


async def test_list_order_topics_and_cursor(store: Storage) -> None:
    for n in range(5):
        topics = ("liver-health",) if n % 2 == 0 else ("kidney-health", "liver-health")
        await store.put_article(draft(f"a{n}", published_at=T0 + timedelta(hours=n), topics=topics))
    await store.put_article(draft("tie", published_at=T0 + timedelta(hours=4)))
    everything = await store.list_articles(limit=10)
    assert [a.id for a in everything] == ["tie", "a4", "a3", "a2", "a1", "a0"]
    kidney = await store.list_articles(topic="kidney-health")
    assert [a.id for a in kidney] == ["a3", "a1"]
    first = await store.list_articles(limit=2)
    rest = await store.list_articles(limit=10, before=(first[-1].published_at, first[-1].id))
    assert [a.id for a in first + rest] == [a.id for a in everything]
    assert await store.list_articles(topic="nothing") == []
    moved = await store.put_article(draft("a0", topics=("kidney-health",)))
    assert moved.outcome == "updated"
    assert [a.id for a in await store.list_articles(topic="kidney-health")] == ["a3", "a1", "a0"]
    assert "a0" not in [a.id for a in await store.list_articles(topic="liver-health")]


async def test_batch_is_one_transaction_in_order(store: Storage) -> None:
    results = await store.put_articles([draft("b1"), draft("b2"), draft("b1", title="Again")])
    assert [r.outcome for r in results] == ["created", "created", "updated"]
    assert [e.article_id for e in await store.list_events()] == ["b1", "b2", "b1"]
    assert await store.put_articles([]) == []


async def test_topics(store: Storage) -> None:
    await store.put_article(draft("a1", topics=("liver-health", "diet")))
    topics = await store.list_topics()
    assert [(t.slug, t.title, t.article_count) for t in topics] == [
        ("diet", "Diet", 1),
        ("liver-health", "Liver health", 1),
    ]
    topic, created = await store.put_topic("liver-health", title="Liver", description="About")
    assert not created and (topic.title, topic.description) == ("Liver", "About")
    topic, created = await store.put_topic("empty", title="Empty", description="")
    assert created and topic.article_count == 0
    assert (await store.get_topic("empty")).title == "Empty"
    with pytest.raises(TopicNotFound):
        await store.get_topic("nope")
    await store.put_article(draft("a2", topics=("liver-health",)))
    assert (await store.get_topic("liver-health")).title == "Liver", "articles keep titles"


async def test_tokens(store: Storage) -> None:
    assert await store.count_tokens() == 0
    token = await store.create_token(name="ops", role="operator", token_hash="h1", now=T0)
    assert (token.name, token.role, token.created_at) == ("ops", "operator", T0)
    with pytest.raises(TokenExists):
        await store.create_token(name="ops", role="partner", token_hash="h2")
    assert await store.get_token_by_hash("h1") == token
    assert await store.get_token_by_hash("nope") is None
    await store.touch_token(token.id, now=T0 + timedelta(minutes=1))
    assert (await store.list_tokens())[0].last_used_at == T0 + timedelta(minutes=1)
    assert await store.count_tokens() == 1
    revoked = await store.revoke_token("ops", now=T0 + timedelta(hours=1))
    assert revoked is not None and revoked.revoked_at == T0 + timedelta(hours=1)
    with pytest.raises(TokenAlreadyRevoked) as already:
        await store.revoke_token("ops")
    assert already.value.revoked_at == T0 + timedelta(hours=1)
    assert await store.revoke_token("nobody") is None
    assert await store.get_token_by_hash("h1") is None
    assert await store.count_tokens() == 0


async def test_a_revoked_tokens_name_can_be_given_again(store: Storage) -> None:
    first = await store.create_token(name="ops", role="operator", token_hash="h1", now=T0)
    await store.revoke_token("ops", now=T0 + timedelta(hours=1))
    second = await store.create_token(name="ops", role="operator", token_hash="h2", now=T0)
    assert second.id != first.id and second.role == "operator"
    assert await store.get_token_by_hash("h2") == second
    assert await store.get_token_by_hash("h1") is None
    with pytest.raises(TokenExists):  # unique among live tokens still
        await store.create_token(name="ops", role="partner", token_hash="h3")
    listed = [(t.id, t.revoked_at is None) for t in await store.list_tokens()]
    assert listed == [(first.id, False), (second.id, True)]  # (id, live)
    assert await store.count_tokens() == 1
    # Revoking the name revokes the live one; then it is already revoked.
    revoked = await store.revoke_token("ops", now=T0 + timedelta(hours=2))
    assert revoked is not None and revoked.id == second.id
    with pytest.raises(TokenAlreadyRevoked) as already:
        await store.revoke_token("ops")
    assert already.value.revoked_at == T0 + timedelta(hours=2)


async def make_deliveries(store: Storage, count: int) -> tuple[int, list[str]]:
    await store.put_article(draft())
    seq = (await store.list_events())[-1].seq
    ids = []
    for n in range(count):
        sub = await store.create_subscription(
            id=f"sub{n}",
            kind="webhook",
            url=f"https://example.org/hook/{n}",
            topics=["*"],
            events=["article.published"],
            secret="whsec_x",
            owner="acme",
        )
        ids.append(sub.id)
    return seq, ids


async def test_subscriptions_and_idempotent_fan_out(store: Storage) -> None:
    seq, ids = await make_deliveries(store, 3)
    sub = await store.get_subscription("sub0")
    assert (sub.kind, sub.topics, sub.status, sub.owner) == ("webhook", ("*",), "active", "acme")
    with pytest.raises(SubscriptionNotFound):
        await store.get_subscription("nope")
    assert await store.create_deliveries(seq, ids, now=T0) == 3
    assert await store.create_deliveries(seq, ids, now=T0) == 0, "fan-out is idempotent"
    claimed = await store.claim_deliveries(
        worker="w", limit=10, lease=timedelta(seconds=30), now=T0
    )
    assert sorted(d.subscription_id for d in claimed) == ids
    delivery = await store.get_delivery(claimed[0].id)
    assert (delivery.status, delivery.attempts, delivery.claimed_by) == ("pending", 0, "w")
    assert delivery.claimed_until == T0 + timedelta(seconds=30)
    with pytest.raises(DeliveryNotFound):
        await store.get_delivery(999_999)


async def test_claims_never_overlap_and_leases_expire(store: Storage) -> None:
    seq, ids = await make_deliveries(store, 40)
    await store.create_deliveries(seq, ids, now=T0)
    lease = timedelta(seconds=30)
    now = T0 + timedelta(seconds=1)

    async def claimer(name: str) -> list[int]:
        got: list[int] = []
        while True:
            batch = await store.claim_deliveries(worker=name, limit=3, lease=lease, now=now)
            if not batch:
                return got
            got += [d.id for d in batch]
            await asyncio.sleep(0)

    a, b = await asyncio.gather(claimer("a"), claimer("b"))
    assert not set(a) & set(b), "no delivery is handed to two workers"
    assert len(a) + len(b) == 40
    assert await store.claim_deliveries(worker="c", limit=100, lease=lease, now=now) == []

    expired = now + lease + timedelta(seconds=1)
    again = await store.claim_deliveries(worker="c", limit=100, lease=lease, now=expired)
    assert len(again) == 40 and {d.claimed_by for d in again} == {"c"}

    await store.release_delivery(again[0].id, worker="someone-else")
    assert (await store.get_delivery(again[0].id)).claimed_by == "c"
    await store.release_delivery(again[0].id, worker="c")
    back = await store.claim_deliveries(worker="d", limit=100, lease=lease, now=expired)
    assert [d.id for d in back] == [again[0].id]


async def test_not_yet_due_is_not_claimed(store: Storage) -> None:
    seq, ids = await make_deliveries(store, 1)
    await store.create_deliveries(seq, ids, now=T0)
    early = T0 - timedelta(seconds=1)
    assert (
        await store.claim_deliveries(worker="w", limit=5, lease=timedelta(seconds=5), now=early)
        == []
    )


async def test_two_connections_claim_disjointly(database_url: str) -> None:
    """Two independent Storage objects (as two processes would have) on one database."""
    first = await open_storage(database_url)
    second = await open_storage(database_url)
    try:
        seq, ids = await make_deliveries(first, 30)
        await first.create_deliveries(seq, ids, now=T0)

        async def drain(store: Storage, name: str) -> list[int]:
            got: list[int] = []
            while batch := await store.claim_deliveries(
                worker=name, limit=2, lease=timedelta(minutes=1), now=T0
            ):
                got += [d.id for d in batch]
            return got

        a, b = await asyncio.gather(drain(first, "p1"), drain(second, "p2"))
        assert not set(a) & set(b)
        assert len(a) + len(b) == 30
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
async def test_a_write_waiting_for_another_process_sees_what_it_committed(
    database_url: str, batch: bool
) -> None:
    """Another process is in the middle of writing article "race" (it holds the
    write lock). Our write of the same id waits for it, and then sees it: an
    update of that article (version 2), not a second create. A batch is decided
    before it waits (put_articles prepares outside the lock): it is decided again,
    so another article of it that wants the same slug gets the next one."""
    store = await open_storage(database_url)
    row = (
        "race",
        "tag:other,2026:article/race",
        "race-slug",
        "From the other process",
        "S",
        "<p>other</p>",
        "html",
        '["liver-health"]',
        T0,
        T0,
        T0,
        1,
    )
    other: Any = None
    ours: asyncio.Task[Any] | None = None
    try:
        if database_url.startswith("sqlite"):
            import sqlite3

            other = sqlite3.connect(path_from_url(database_url), isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            other.execute(
                "INSERT INTO articles (id, guid, slug, title, summary, content, content_type,"
                " topics, published_at, updated_at, created_at, version)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row[:8], *(format_time(t) for t in row[8:11]), row[11]),
            )
            commit: Any = other.execute
        else:
            import asyncpg

            from storage.postgres import _WRITE_LOCK

            other = await asyncpg.connect(database_url)
            await other.execute(f"BEGIN; SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
            await other.execute(
                "INSERT INTO articles (id, guid, slug, title, summary, content, content_type,"
                " topics, published_at, updated_at, created_at, version)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12)",
                *row,
            )
            commit = other.execute
        mine = draft("race", title="Ours")
        if batch:
            drafts = [mine, draft("next", slug="race-slug")]
            ours = asyncio.create_task(store.put_articles(drafts, now=T0))
        else:
            ours = asyncio.create_task(store.put_article(mine, now=T0))
        await asyncio.sleep(0.3)
        assert not ours.done(), "our write waits for the other process's"
        result = commit("COMMIT")
        if asyncio.iscoroutine(result):
            await result
        done = await asyncio.wait_for(ours, 10)
        written = done[0] if batch else done
        if batch:
            assert (done[1].outcome, done[1].article.slug) == ("created", "race-slug-2")
        assert written.outcome == "updated"
        assert (written.article.version, written.article.title) == (2, "Ours")
        assert written.article.guid == "tag:other,2026:article/race"
    finally:
        # The other process goes first (rolling back if it never committed), so
        # that our write, if still waiting for its lock, can finish before we close.
        if other is not None:
            closed = other.close()
            if asyncio.iscoroutine(closed):
                await closed
        if ours is not None and not ours.done():
            ours.cancel()
            with contextlib.suppress(BaseException):
                await ours
        await store.close()


async def test_data_survives_reopen(database_url: str) -> None:
    first = await open_storage(database_url)
    await first.put_article(draft(), now=T0)
    await first.close()
    await first.close()
    second = await open_storage(database_url)
    try:
        assert (await second.get_article("a1")).published_at == T0
        assert len(await second.list_events()) == 1
    finally:
        await second.close()


async def test_feed_state_marks_every_topic_an_article_touches(store: Storage) -> None:
    assert await store.feed_state(None) == await store.feed_state(None)
    assert (await store.feed_state(None)).seq == 0
    with pytest.raises(TopicNotFound):
        await store.feed_state("nope")
    await store.put_article(draft("a1", topics=("liver-health",)), now=T0)
    liver = await store.feed_state("liver-health")
    assert liver.seq > 0 and liver.changed_at == T0
    assert (await store.feed_state(None)).seq == liver.seq

    later = T0 + timedelta(hours=1)
    await store.put_article(draft("a2", topics=("diet",)), now=later)
    assert await store.feed_state("liver-health") == liver, "other topics are untouched"
    await store.put_article(draft("a2", topics=("diet",)), now=later + timedelta(hours=1))
    assert (await store.feed_state("diet")).changed_at == later, "unchanged writes mark nothing"

    moved_at = T0 + timedelta(hours=3)
    await store.put_article(draft("a1", topics=("diet",)), now=moved_at)
    assert (await store.feed_state("liver-health")).changed_at == moved_at, "left the topic"
    assert (await store.feed_state("diet")).changed_at == moved_at, "entered the topic"

    deleted_at = T0 + timedelta(hours=4)
    await store.delete_article("a2", now=deleted_at)
    diet = await store.feed_state("diet")
    assert diet.changed_at == deleted_at and diet.seq == (await store.feed_state(None)).seq
    assert (await store.feed_state(None)).changed_at == deleted_at

    await store.put_topic("diet", title="Diet & food", description="")
    assert (await store.feed_state("diet")).updated_at != diet.updated_at


async def test_list_after_gives_newer_oldest_first(store: Storage) -> None:
    for n in range(4):
        await store.put_article(draft(f"a{n}", published_at=T0 + timedelta(hours=n)))
    a1 = await store.get_article("a1")
    newer = await store.list_articles(after=(a1.published_at, a1.id), limit=5)
    assert [a.id for a in newer] == ["a2", "a3"]
    in_topic = await store.list_articles(
        topic="liver-health", after=(a1.published_at, a1.id), limit=1
    )
    assert [a.id for a in in_topic] == ["a2"]


async def test_topic_counts_follow_every_write(store: Storage) -> None:
    async def counts() -> dict[str, int]:
        return {t.slug: t.article_count for t in await store.list_topics()}

    await store.put_articles(
        [draft("a1", topics=("liver", "diet")), draft("a2", topics=("liver",))]
    )
    assert await counts() == {"diet": 1, "liver": 2}
    await store.put_article(draft("a1", topics=("diet",)))
    assert await counts() == {"diet": 1, "liver": 1}
    await store.put_article(draft("a1", topics=("diet",)))
    assert await counts() == {"diet": 1, "liver": 1}, "unchanged writes count nothing"
    await store.delete_article("a2")
    await store.delete_article("a2")
    assert await counts() == {"diet": 1, "liver": 0}
    await store.put_article(draft("a2", topics=("liver", "diet")))
    assert await counts() == {"diet": 2, "liver": 1}
    assert (await store.get_topic("diet")).article_count == 2


async def test_one_batch_writing_an_id_twice_is_written_in_order(store: Storage) -> None:
    """Within one batch an article may give up a slug that a later write takes,
    and a topic named only by an overwritten state is not created."""
    await store.put_article(draft("a", slug="foo", slug_explicit=True))
    results = await store.put_articles(
        [
            draft("b", slug="b", slug_explicit=True, topics=("phantom",)),
            draft("a", slug="bar", slug_explicit=True),
            draft("b", slug="foo", slug_explicit=True, topics=("real",)),
        ]
    )
    assert [r.article.slug for r in results] == ["b", "bar", "foo"]
    assert (await store.get_article("a")).slug == "bar"
    assert (await store.get_article("b")).slug == "foo"
    counts = {t.slug: t.article_count for t in await store.list_topics()}
    assert counts == {"liver-health": 1, "real": 1}
    with pytest.raises(TopicNotFound):
        await store.feed_state("phantom")
    assert [e.article_id for e in await store.list_events()] == ["a", "b", "a", "b"]


async def test_slug_suffixes_skip_only_what_is_taken(store: Storage) -> None:
    await store.put_article(draft("x", slug="same-extra", slug_explicit=True))
    await store.put_article(draft("y", slug="same-3", slug_explicit=True))
    slugs = [(await store.put_article(draft(f"a{n}", slug="same"))).article.slug for n in range(4)]
    assert slugs == ["same", "same-2", "same-4", "same-5"]
    again = await store.put_article(draft("a1", slug="same", slug_explicit=True, title="T"))
    assert again.article.slug == "same-2", "an article never clashes with itself"


async def test_batch_with_many_taken_slugs_suffixes_each_base_apart(store: Storage) -> None:
    # A re-import: one batch whose slugs are already held, for several bases at once
    # (looked up together): each base's own base-N forms decide its suffix.
    for article_id, slug in [
        ("o1", "alpha"),
        ("o2", "beta"),
        ("o3", "beta-2"),
        ("o4", "gamma-2"),
        ("o5", "alphabet"),
        ("o6", "alpha-x"),
    ]:
        await store.put_article(draft(article_id, slug=slug, slug_explicit=True))
    wanted = ["alpha", "beta", "gamma", "alpha", "delta", "beta"]
    results = await store.put_articles([draft(f"n{n}", slug=slug) for n, slug in enumerate(wanted)])
    assert [r.article.slug for r in results] == [
        "alpha-2",
        "beta-3",
        "gamma",
        "alpha-3",
        "delta",
        "beta-4",
    ]


async def test_concurrent_single_writes_are_each_answered_as_if_alone(store: Storage) -> None:
    # Many writes at once share transactions (group commit); each still gets its
    # own answer: one winner per id, distinct slugs, right counts, one event each.
    drafts = [
        draft(f"c{n}", slug="same", topics=("liver", "diet") if n % 2 else ("liver",))
        for n in range(40)
    ]
    late_duplicate = draft("c0", title="Second c0")
    results = await asyncio.gather(
        *(store.put_article(d, create_only=True) for d in [*drafts, late_duplicate]),
        return_exceptions=True,
    )
    assert isinstance(results[-1], ArticleExists)
    created = [r for r in results[:-1] if not isinstance(r, BaseException)]
    assert len(created) == 40 and all(r.outcome == "created" for r in created)
    assert sorted(r.article.slug for r in created) == sorted(
        ["same"] + [f"same-{n}" for n in range(2, 41)]
    )
    assert (await store.get_article("c0")).title == "Title c0"
    counts = {t.slug: t.article_count for t in await store.list_topics()}
    assert counts == {"liver": 40, "diet": 20}
    events = await store.list_events(limit=100)
    assert [e.article_id for e in events] == [d.id for d in drafts]
    assert [e.seq for e in events] == sorted(e.seq for e in events)


async def test_batch_sees_its_own_earlier_writes(store: Storage) -> None:
    results = await store.put_articles(
        [
            draft("m1", slug="s"),
            draft("m2", slug="s"),
            draft("m1", slug="t", slug_explicit=True, topics=("diet",)),
            draft("m3", slug="s"),
        ]
    )
    assert [r.article.slug for r in results] == ["s", "s-2", "t", "s"]
    assert [r.outcome for r in results] == ["created", "created", "updated", "created"]
    assert (await store.get_article_by_slug("s")).id == "m3"
    counts = {t.slug: t.article_count for t in await store.list_topics()}
    assert counts == {"liver-health": 2, "diet": 1}
    assert [e.type for e in await store.list_events()] == [
        "article.published",
        "article.published",
        "article.updated",
        "article.published",
    ]


def test_times_are_fixed_width_utc_text() -> None:
    """Stored and served times sort as text: fixed width, UTC, years zero-padded."""
    from datetime import timezone
    from zoneinfo import ZoneInfo

    from storage.records import format_time, parse_time

    plus_two = timezone(timedelta(hours=2))
    cases = {
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC): "2026-01-02T03:04:05.000006Z",
        datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC): "0999-12-31T23:59:59.000000Z",
        datetime(2026, 1, 2, 1, 0, tzinfo=plus_two): "2026-01-01T23:00:00.000000Z",
    }
    for _ in range(2):  # the second time from the cache
        for value, text in cases.items():
            assert format_time(value) == text
            assert parse_time(text) == value
    new_york = ZoneInfo("America/New_York")  # 01:30 comes twice on 2024-11-03
    first, second = (datetime(2024, 11, 3, 1, 30, tzinfo=new_york, fold=f) for f in (0, 1))
    assert [format_time(first), format_time(second)] == [
        "2024-11-03T05:30:00.000000Z",
        "2024-11-03T06:30:00.000000Z",
    ]
    assert format_time(datetime(2026, 1, 1, 23, 0, tzinfo=UTC)) == format_time(
        datetime(2026, 1, 2, 1, 0, tzinfo=plus_two)
    )


async def test_a_reused_name_keeps_its_role(store: Storage) -> None:
    """Subscriptions belong to the token name: a partner given a revoked operator's
    name would take over every subscription the operator made, so a name's new token
    keeps the role of its last one (rotation); another role is refused."""
    await store.create_token(name="operator", role="operator", token_hash="h1", now=T0)
    await store.revoke_token("operator", now=T0 + timedelta(hours=1))
    with pytest.raises(TokenNameKeepsRole) as refused:
        await store.create_token(name="operator", role="partner", token_hash="h2")
    assert isinstance(refused.value, Conflict)
    assert (refused.value.name, refused.value.role) == ("operator", "operator")
    assert "'operator' belonged to an operator token" in str(refused.value)
    assert "keeps its role" in str(refused.value)
    assert await store.get_token_by_hash("h2") is None and await store.count_tokens() == 0
    rotated = await store.create_token(name="operator", role="operator", token_hash="h3")
    assert rotated.role == "operator", "the same role: a rotation, allowed"
    # A partner's name, likewise, is not an operator's to take; a fresh name is free.
    await store.create_token(name="acme", role="partner", token_hash="h4", now=T0)
    await store.revoke_token("acme", now=T0 + timedelta(hours=1))
    with pytest.raises(TokenNameKeepsRole, match="belonged to a partner token"):
        await store.create_token(name="acme", role="operator", token_hash="h5")
    with pytest.raises(TokenExists):  # a live token of another role: the name is taken
        await store.create_token(name="operator", role="partner", token_hash="h6")
    assert (await store.create_token(name="new", role="partner", token_hash="h7")).role == (
        "partner"
    )
    listed = [(t.name, t.role) for t in await store.list_tokens()]
    assert listed == [
        ("operator", "operator"),
        ("operator", "operator"),
        ("acme", "partner"),
        ("new", "partner"),
    ]


async def test_list_deleted_gives_tombstones_newest_deletion_first(store: Storage) -> None:
    await store.put_article(draft("keep"), now=T0)
    for n, topics in enumerate([("liver-health",), ("kidney-health", "liver-health"), ("eyes",)]):
        await store.put_article(draft(f"d{n}", topics=topics), now=T0)
    await store.put_article(draft("tie"), now=T0)
    gone = T0 + timedelta(hours=1)
    await store.delete_article("d0", now=gone)
    await store.delete_article("d1", now=gone + timedelta(minutes=1))
    await store.delete_article("tie", now=gone + timedelta(minutes=1))
    await store.delete_article("d2", now=gone + timedelta(minutes=2))

    every = await store.list_deleted(since=gone)
    assert [a.id for a in every] == ["d2", "tie", "d1", "d0"]
    assert all(a.deleted for a in every)
    assert every[0] == await store.get_article("d2")
    # Of one topic: the topics the article had when deleted.
    liver = await store.list_deleted(topic="liver-health", since=gone)
    assert [a.id for a in liver] == ["tie", "d1", "d0"]
    assert [a.id for a in await store.list_deleted(topic="kidney-health", since=gone)] == ["d1"]
    assert await store.list_deleted(topic="nothing", since=gone) == []
    # since is inclusive; limit cuts the oldest.
    later = await store.list_deleted(since=gone + timedelta(minutes=1))
    assert [a.id for a in later] == ["d2", "tie", "d1"]
    assert [a.id for a in await store.list_deleted(since=gone, limit=2)] == ["d2", "tie"]
    # A revived article is no tombstone any more.
    await store.put_article(draft("d0"), now=gone + timedelta(hours=1))
    assert [a.id for a in await store.list_deleted(since=gone)] == ["d2", "tie", "d1"]
