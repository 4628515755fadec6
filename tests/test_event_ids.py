"""Event ids are unique across databases: ``msg_`` + a UUIDv7, stored with the event
and sent as ``webhook-id`` to every subscriber of it, on every retry. A database from
before the ids is migrated and its events get one. Both backends; real partner
servers on 127.0.0.1, signatures checked with the standardwebhooks package."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import PostgresServer, ServerFactory, dsn_for, fresh_database, pg_dsn
from receiver import Receiver, respond_with
from test_delivery import subscribe, verify

from storage import Storage, open_storage
from storage._sql import load_migrations
from storage.postgres import Q as PG
from storage.records import Article, ArticleDraft, format_time
from storage.sqlite import _statements
from syndicate.delivery import webhooks
from syndicate.web.auth import create_token

EVENT_ID = re.compile(r"msg_[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}")
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
FAST = {
    "allow_private_targets": True,
    "retry_schedule": (0.2, 0.2, 0.2),
    "delivery_timeout": 2.0,
    "delivery_connect_timeout": 1.0,
}
ARTICLE = {
    "id": "liver-1",
    "title": "Fatty liver",
    "content": "<p>About the liver.</p>",
    "topics": ["liver-health"],
    "published_at": "2026-11-20T08:00:00Z",
}


def draft(article_id: str, **changes: Any) -> ArticleDraft:
    values: dict[str, Any] = {
        "id": article_id,
        "guid": f"tag:example.org,2026:article/{article_id}",
        "slug": article_id,
        "title": f"Title {article_id}",
        "summary": "Summary",
        "content": "<p>Body</p>",
        "content_type": "html",
        "topics": ("liver-health",),
        "published_at": T0,
        **changes,
    }
    return ArticleDraft(**values)


def uuid_time(event_id: str) -> datetime:
    """The millisecond a UUIDv7 event id carries."""
    value = uuid.UUID(event_id.removeprefix("msg_"))
    assert (value.version, value.variant) == (7, uuid.RFC_4122)
    return datetime.fromtimestamp(int(value.hex[:12], 16) / 1000, UTC)


async def write_changes(store: Storage) -> None:
    """Every way an event is written: a batch of distinct articles (SQLite builds the
    snapshots in SQL), one write holding two versions of an article, an update and a
    deletion."""
    await store.put_articles([draft("a"), draft("b"), draft("c")], now=T0)
    await asyncio.gather(
        store.put_article(draft("d", title="First"), now=T0),
        store.put_article(draft("d", title="Second"), now=T0),
    )
    await store.put_article(draft("a", title="Changed"), now=T0 + timedelta(hours=1))
    await store.delete_article("b", now=T0 + timedelta(hours=2))


@pytest.fixture
async def other_database_url(
    backend: str, tmp_path: Path, postgres_server: PostgresServer | None
) -> AsyncIterator[str]:
    """A second fresh database of the test's backend: another deployment."""
    async with fresh_database(backend, tmp_path / "other.db", postgres_server) as url:
        yield url


@pytest.fixture
async def other_store(other_database_url: str) -> AsyncIterator[Storage]:
    storage = await open_storage(other_database_url)
    yield storage
    await storage.close()


# -- ids as stored ---------------------------------------------------------------------


async def test_two_databases_never_share_an_event_id(store: Storage, other_store: Storage) -> None:
    # The same writes at the same instants in two databases (two deployments, or one
    # restored from a backup): the seqs match, the ids never do.
    started = datetime.now(UTC).replace(microsecond=0)
    await write_changes(store)
    await write_changes(other_store)
    one, two = await store.list_events(), await other_store.list_events()
    assert [e.seq for e in one] == [e.seq for e in two] == list(range(1, 8))
    ids = [e.id for e in one + two]
    assert all(EVENT_ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids) == 14
    # Made when written (not at the event's given time), so ids sort as they are made.
    assert all(uuid_time(e.id) >= started for e in one + two)


async def test_an_event_keeps_its_id(store: Storage) -> None:
    await write_changes(store)
    events = await store.list_events()
    heads = await store.list_events(with_data=False)
    assert [e.id for e in heads] == [e.id for e in events]
    seqs = [e.seq for e in events]
    assert {s: e.id for s, e in (await store.get_events(seqs)).items()} == {
        e.seq: e.id for e in events
    }
    assert await store.get_event_ids(seqs) == {e.seq: e.id for e in events}
    assert [webhooks.message_id(e) for e in events] == [e.id for e in events]


# -- ids as sent -----------------------------------------------------------------------


async def test_every_subscriber_and_every_retry_get_the_events_id(
    store: Storage,
    start_server: ServerFactory,
    tokens: dict[str, str],
    receiver: Receiver,
) -> None:
    service = await start_server(**FAST)
    service.token = tokens["operator"]
    receiver.behaviours["/flaky"] = respond_with(500, 200)
    flaky = await subscribe(service, tokens["partner"], receiver.url("/flaky"))
    steady = await subscribe(service, tokens["partner"], receiver.url("/steady"))
    async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
        assert resp.status == 201
    await receiver.wait_for(lambda: len(receiver.at("/flaky")) == 2 and receiver.at("/steady"))
    (event,) = await store.list_events()
    first, retry = receiver.at("/flaky")
    (other,) = receiver.at("/steady")
    assert verify(flaky["secret"], first) == verify(flaky["secret"], retry)
    assert verify(steady["secret"], other)["type"] == "article.published"
    assert first.message_id == retry.message_id == other.message_id == event.id
    assert EVENT_ID.fullmatch(event.id)

    # The deliveries API shows the same id for each subscription's delivery.
    for sub in (flaky, steady):
        path = f"/api/subscriptions/{sub['id']}/deliveries"
        async with service.request("GET", path, token=tokens["partner"]) as resp:
            assert resp.status == 200
            (log,) = (await resp.json())["deliveries"]
        assert log["message_id"] == event.id
        retry_path = f"{path}/{log['id']}/retry"
        async with service.request("POST", retry_path, token=tokens["partner"]) as resp:
            assert resp.status == 202
            assert (await resp.json())["message_id"] == event.id
    # A replayed delivery is the same message again.
    await receiver.wait_for(
        lambda: len(receiver.at("/flaky")) == 3 and len(receiver.at("/steady")) == 2
    )
    assert {r.message_id for r in receiver.received} == {event.id}


async def test_a_receiver_shared_by_two_deployments_sees_distinct_ids(
    store: Storage,
    other_store: Storage,
    start_server: ServerFactory,
    tokens: dict[str, str],
    receiver: Receiver,
) -> None:
    # Each deployment with its own database, tokens and subscription: one receiver.
    other_tokens = {
        role: (await create_token(other_store, name=f"other-{role}", role=role))[0]
        for role in ("operator", "partner")
    }
    deployments = [
        (await start_server(**FAST), tokens),
        (await start_server(storage=other_store, **FAST), other_tokens),
    ]
    secrets = []
    for n, (service, its_tokens) in enumerate(deployments):
        service.token = its_tokens["operator"]
        sub = await subscribe(service, its_tokens["partner"], receiver.url(f"/hook{n}"))
        secrets.append(sub["secret"])
        async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
            assert resp.status == 201
    await receiver.wait_for(lambda: receiver.at("/hook0") and receiver.at("/hook1"))
    (one,), (two,) = receiver.at("/hook0"), receiver.at("/hook1")
    assert verify(secrets[0], one)["data"]["id"] == verify(secrets[1], two)["data"]["id"]
    assert one.message_id != two.message_id, "a receiver shared by both would drop one"
    assert {one.message_id, two.message_id} == {
        (await store.list_events())[0].id,
        (await other_store.list_events())[0].id,
    }


# -- a database from before the ids ----------------------------------------------------


def _old_article(article_id: str, at: datetime) -> Article:
    return Article(
        id=article_id,
        guid=f"tag:example.org,2026:article/{article_id}",
        slug=article_id,
        title=f"Old {article_id}",
        summary="Summary",
        content="<p>Old body</p>",
        content_type="html",
        topics=("liver-health",),
        author=None,
        url=None,
        image=None,
        language=None,
        published_at=at,
        updated_at=at,
        created_at=at,
        version=1,
    )


def _event_ids_version(dialect: str) -> int:
    (version,) = [m.version for m in load_migrations(dialect) if m.name.endswith("_event_ids.sql")]
    return version


def _make_old_sqlite(path: Path, events: list[tuple[str, Article]]) -> None:
    """Every migration before the event ids, then events written as the code of
    then wrote them: no id column at all."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(
            "CREATE TABLE schema_version ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        for migration in load_migrations("sqlite"):
            if migration.version >= _event_ids_version("sqlite"):
                break
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                (migration.version, migration.name, format_time(T0)),
            )
        conn.executemany(
            "INSERT INTO events (type, article_id, topics, data, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (
                    kind,
                    a.id,
                    json.dumps(list(a.topics)),
                    json.dumps(a.to_json()),
                    format_time(a.updated_at),
                )
                for kind, a in events
            ],
        )
        assert "id" not in {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    finally:
        conn.close()


async def _make_old_postgres(dsn: str, events: list[tuple[str, Article]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(PG["create_schema_version"])
            for migration in load_migrations("postgres"):
                if migration.version >= _event_ids_version("postgres"):
                    break
                await conn.execute(migration.sql)
                await conn.execute(PG["record_migration"], migration.version, migration.name, T0)
            await conn.executemany(
                "INSERT INTO events (type, article_id, topics, data, created_at)"
                " VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)",
                [
                    (kind, a.id, json.dumps(list(a.topics)), json.dumps(a.to_json()), a.updated_at)
                    for kind, a in events
                ],
            )
    finally:
        await conn.close()


@pytest.fixture
async def old_database_url(
    backend: str, tmp_path: Path, postgres_server: PostgresServer | None
) -> AsyncIterator[str]:
    """A database migrated up to just before the event ids, holding three events (two
    at the same millisecond) written without one."""
    base = datetime.now(UTC).replace(microsecond=123456) - timedelta(minutes=5)
    old = [
        ("article.published", _old_article("old-1", base)),
        ("article.published", _old_article("old-2", base + timedelta(microseconds=1))),
        ("article.updated", _old_article("old-1", base + timedelta(seconds=1))),
    ]
    if backend == "sqlite":
        path = tmp_path / "old.db"
        _make_old_sqlite(path, old)
        yield f"sqlite:///{path}"
        return
    if postgres_server is None:
        pytest.skip(f"no PostgreSQL at {pg_dsn()}")
    name = f"{postgres_server.prefix}old{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = dsn_for(name)
    try:
        await _make_old_postgres(dsn, old)
        yield dsn
    finally:
        await postgres_server.drop(dsn)


@pytest.fixture
async def old_store(old_database_url: str) -> AsyncIterator[Storage]:
    """The old database, opened (and so migrated) by today's code."""
    storage = await open_storage(old_database_url)
    yield storage
    await storage.close()


async def test_a_database_from_before_the_ids_keeps_working(
    old_store: Storage, start_server: ServerFactory, receiver: Receiver
) -> None:
    store = old_store
    events = await store.list_events()
    assert [(e.seq, e.article_id) for e in events] == [(1, "old-1"), (2, "old-2"), (3, "old-1")]
    ids = [e.id for e in events]
    assert all(EVENT_ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == 3
    # The backfilled UUIDv7 carries the event's own time (to the millisecond).
    for event in events:
        assert uuid_time(event.id) == event.created_at.replace(
            microsecond=event.created_at.microsecond // 1000 * 1000
        )
    assert await store.get_event_ids([1, 2, 3]) == dict(zip([1, 2, 3], ids, strict=True))

    # New events follow on with ids of their own.
    written = await store.put_article(draft("new-1"))
    newer = (await store.list_events(after=3))[0]
    assert (newer.seq, newer.article_id) == (4, written.article.id)
    assert EVENT_ID.fullmatch(newer.id) and newer.id not in ids

    # The old events are still delivered, each with its id as webhook-id.
    secret = webhooks.new_secret()
    await store.create_subscription(
        id=webhooks.new_subscription_id(),
        kind="webhook",
        url=receiver.url("/old"),
        topics=["liver-health"],
        events=[],
        secret=secret,
        now=events[0].created_at - timedelta(hours=1),
    )
    await start_server(storage=store, **FAST)
    await receiver.wait_for(lambda: len(receiver.at("/old")) == 4)
    sent = {r.message_id: verify(secret, r) for r in receiver.at("/old")}
    assert set(sent) == {*ids, newer.id}
    assert sent[ids[1]]["data"]["id"] == "old-2"
    assert sent[ids[2]]["type"] == "article.updated"
