"""The embedded default backend: one SQLite file through aiosqlite.

One writer connection (writes are serialised by SQLite anyway; an asyncio lock
keeps one transaction at a time on it, ``BEGIN IMMEDIATE`` keeps other
processes out) and one reader connection, which in WAL mode sees only
committed data and never waits for the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from . import _changes
from ._sql import load_migrations, load_queries
from .base import ListCursor
from .errors import (
    ArticleNotFound,
    DeliveryNotFound,
    StorageError,
    StorageUnavailable,
    SubscriptionNotFound,
    TokenExists,
    TopicNotFound,
)
from .records import (
    Article,
    ArticleDraft,
    Delivery,
    Event,
    FeedState,
    PutResult,
    Role,
    Subscription,
    SubscriptionKind,
    SubscriptionStatus,
    Token,
    Topic,
    default_topic_title,
    format_time,
    parse_time,
    utcnow,
)

logger = logging.getLogger(__name__)

Q = load_queries("sqlite")
DEFAULT_BUSY_TIMEOUT_MS = 10_000
#: Sorts after every stored time: the "no cursor" upper bound.
_AFTER_ALL = "~"


@contextlib.contextmanager
def wrap_exceptions() -> Iterator[None]:
    """Map sqlite3 driver errors to the storage error tree."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        message = str(exc)
        if "locked" in message or "busy" in message or "unable to open" in message:
            raise StorageUnavailable(f"SQLite: {message}") from exc
        raise StorageError(f"SQLite: {message}") from exc
    except (sqlite3.DatabaseError, ValueError) as exc:
        if isinstance(exc, ValueError) and "closed" not in str(exc):
            raise
        raise StorageError(f"SQLite: {exc}") from exc


def _t(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def _pt(value: str | None) -> datetime | None:
    return None if value is None else parse_time(value)


def _article(row: sqlite3.Row) -> Article:
    return Article(
        id=row["id"],
        guid=row["guid"],
        slug=row["slug"],
        title=row["title"],
        summary=row["summary"],
        content=row["content"],
        content_type=row["content_type"],
        topics=tuple(json.loads(row["topics"])),
        author=row["author"],
        url=row["url"],
        image=row["image"],
        language=row["language"],
        published_at=parse_time(row["published_at"]),
        updated_at=parse_time(row["updated_at"]),
        created_at=parse_time(row["created_at"]),
        version=row["version"],
        deleted_at=_pt(row["deleted_at"]),
    )


def _article_params(article: Article) -> dict[str, Any]:
    return {
        "id": article.id,
        "guid": article.guid,
        "slug": article.slug,
        "title": article.title,
        "summary": article.summary,
        "content": article.content,
        "content_type": article.content_type,
        "topics": json.dumps(list(article.topics)),
        "author": article.author,
        "url": article.url,
        "image": article.image,
        "language": article.language,
        "published_at": format_time(article.published_at),
        "updated_at": format_time(article.updated_at),
        "created_at": format_time(article.created_at),
        "version": article.version,
        "deleted_at": _t(article.deleted_at),
    }


def _topic(row: sqlite3.Row) -> Topic:
    return Topic(
        slug=row["slug"],
        title=row["title"],
        description=row["description"],
        created_at=parse_time(row["created_at"]),
        updated_at=parse_time(row["updated_at"]),
        article_count=row["article_count"],
        changed_seq=row["changed_seq"],
        changed_at=_pt(row["changed_at"]),
    )


def _token(row: sqlite3.Row) -> Token:
    return Token(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        created_at=parse_time(row["created_at"]),
        last_used_at=_pt(row["last_used_at"]),
        revoked_at=_pt(row["revoked_at"]),
    )


def _event(row: sqlite3.Row) -> Event:
    return Event(
        seq=row["seq"],
        type=row["type"],
        article_id=row["article_id"],
        topics=tuple(json.loads(row["topics"])),
        data=json.loads(row["data"]),
        created_at=parse_time(row["created_at"]),
    )


def _subscription(row: sqlite3.Row) -> Subscription:
    return Subscription(
        id=row["id"],
        kind=row["kind"],
        owner=row["owner"],
        url=row["url"],
        topics=tuple(json.loads(row["topics"])),
        events=tuple(json.loads(row["events"])),
        secret=row["secret"],
        status=row["status"],
        description=row["description"],
        created_at=parse_time(row["created_at"]),
        updated_at=parse_time(row["updated_at"]),
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=_pt(row["previous_secret_expires_at"]),
        lease_expires_at=_pt(row["lease_expires_at"]),
        last_success_at=_pt(row["last_success_at"]),
        failing_since=_pt(row["failing_since"]),
    )


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=row["id"],
        event_seq=row["event_seq"],
        subscription_id=row["subscription_id"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=parse_time(row["next_attempt_at"]),
        created_at=parse_time(row["created_at"]),
        claimed_until=_pt(row["claimed_until"]),
        claimed_by=row["claimed_by"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        last_response_body=row["last_response_body"],
        last_latency_ms=row["last_latency_ms"],
        delivered_at=_pt(row["delivered_at"]),
    )


def _statements(script: str) -> Iterator[str]:
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            buffer = ""
            if statement:
                yield statement
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()
    ):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buffer!r}")


def path_from_url(url: str) -> str:
    """``sqlite:///data/x.db`` -> ``data/x.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to/file.db)")
    path = url.removeprefix("sqlite:///")
    if not path:
        raise ValueError(f"SQLite URL has no file path: {url!r}")
    return path


class SQLiteStorage:
    """``Storage`` on a SQLite file. Create with ``await SQLiteStorage.open(path)``."""

    def __init__(self, path: str, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(
        cls, path: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, migrate: bool = True
    ) -> SQLiteStorage:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with wrap_exceptions():
            writer = await cls._connect(path, busy_timeout_ms)
            try:
                await writer.execute("PRAGMA journal_mode = WAL")
                if migrate:
                    await cls._migrate(writer)
                reader = await cls._connect(path, busy_timeout_ms)
            except BaseException:
                await writer.close()
                raise
        return cls(path, writer, reader)

    @staticmethod
    async def _connect(path: str, busy_timeout_ms: int) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @staticmethod
    async def _migrate(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        await conn.execute("BEGIN IMMEDIATE")
        try:
            async with conn.execute("SELECT coalesce(max(version), 0) FROM schema_version") as cur:
                row = await cur.fetchone()
            current = row[0] if row else 0
            for migration in load_migrations("sqlite"):
                if migration.version <= current:
                    continue
                logger.info("applying migration", extra={"migration": migration.name})
                for statement in _statements(migration.sql):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, format_time(utcnow())),
                )
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise

    async def schema_version(self) -> int:
        async with self._read("SELECT coalesce(max(version), 0) FROM schema_version") as rows:
            return int(rows[0][0])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._reader.close()
        await self._writer.close()

    async def ping(self) -> None:
        async with self._read("SELECT 1"):
            pass

    # -- plumbing ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _read(self, sql: str, params: Sequence[Any] = ()) -> AsyncIterator[list[Any]]:
        with wrap_exceptions():
            async with self._reader.execute(sql, params) as cur:
                rows = await cur.fetchall()
        yield list(rows)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            with wrap_exceptions():
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield self._writer
                except BaseException:
                    await self._writer.execute("ROLLBACK")
                    raise
                await self._writer.execute("COMMIT")

    @staticmethod
    async def _one(conn: aiosqlite.Connection, sql: str, params: Any = ()) -> sqlite3.Row | None:
        async with conn.execute(sql, params) as cur:
            row: sqlite3.Row | None = await cur.fetchone()
            return row

    # -- articles ---------------------------------------------------------------

    async def _put(
        self, conn: aiosqlite.Connection, draft: ArticleDraft, *, create_only: bool, now: datetime
    ) -> PutResult:
        row = await self._one(conn, Q["get_article"], (draft.id,))
        existing = _article(row) if row else None
        wanted = _changes.wanted_slug(existing, draft)
        slug = await self._unique_slug(conn, wanted, draft.id) if wanted else None
        change = _changes.plan_put(existing, draft, slug=slug, now=now, create_only=create_only)
        if change.event is None:
            return PutResult(change.article, change.outcome)
        article = change.article
        params = _article_params(article)
        if existing is None:
            await conn.execute(Q["insert_article"], params)
        else:
            await conn.execute(Q["update_article"], params)
        await self._index_topics(conn, article, now)
        seq = await self._record_event(conn, change.event, article, now)
        touched = set(article.topics) | set(existing.topics if existing else ())
        await self._mark_changed(conn, touched, seq, now)
        return PutResult(article, change.outcome)

    @staticmethod
    async def _mark_changed(
        conn: aiosqlite.Connection, topics: set[str], seq: int, now: datetime
    ) -> None:
        await conn.execute(
            Q["mark_topics_changed"], (seq, format_time(now), json.dumps(sorted(topics)))
        )

    async def _unique_slug(self, conn: aiosqlite.Connection, base: str, article_id: str) -> str:
        for candidate in _changes.slug_candidates(base):
            row = await self._one(conn, Q["slug_owner"], (candidate,))
            if row is None or row["id"] == article_id:
                return candidate
        raise StorageError(f"no free slug for {base!r}")

    async def _index_topics(
        self, conn: aiosqlite.Connection, article: Article, now: datetime
    ) -> None:
        await conn.execute(Q["uncount_article_topics"], (article.id,))
        await conn.execute(Q["delete_article_topics"], (article.id,))
        if article.deleted:
            return
        stamp = format_time(now)
        published = format_time(article.published_at)
        for topic in article.topics:
            title = default_topic_title(topic)
            await conn.execute(Q["ensure_topic"], (topic, title, stamp, stamp))
            await conn.execute(Q["insert_article_topic"], (topic, article.id, published))
        await conn.execute(Q["count_article_topics"], (json.dumps(list(article.topics)),))

    async def _record_event(
        self, conn: aiosqlite.Connection, event: str, article: Article, now: datetime
    ) -> int:
        row = await self._one(
            conn,
            Q["insert_event"],
            (
                event,
                article.id,
                json.dumps(list(article.topics)),
                json.dumps(article.to_json()),
                format_time(now),
            ),
        )
        assert row is not None
        return int(row[0])

    async def put_article(
        self, draft: ArticleDraft, *, create_only: bool = False, now: datetime | None = None
    ) -> PutResult:
        async with self._transaction() as conn:
            return await self._put(conn, draft, create_only=create_only, now=now or utcnow())

    async def put_articles(
        self, drafts: Sequence[ArticleDraft], *, now: datetime | None = None
    ) -> list[PutResult]:
        stamp = now or utcnow()
        async with self._transaction() as conn:
            return [await self._put(conn, d, create_only=False, now=stamp) for d in drafts]

    async def get_article(self, article_id: str) -> Article:
        async with self._read(Q["get_article"], (article_id,)) as rows:
            if not rows:
                raise ArticleNotFound(article_id)
            return _article(rows[0])

    async def get_article_by_slug(self, slug: str) -> Article:
        async with self._read(Q["get_article_by_slug"], (slug,)) as rows:
            if not rows:
                raise ArticleNotFound(slug)
            return _article(rows[0])

    async def list_articles(
        self,
        *,
        topic: str | None = None,
        limit: int = 50,
        before: ListCursor | None = None,
        after: ListCursor | None = None,
    ) -> list[Article]:
        if after is not None:
            when, last_id = format_time(after[0]), after[1]
            name = "list_articles_after" if topic is None else "list_articles_in_topic_after"
        else:
            when, last_id = (format_time(before[0]), before[1]) if before else (_AFTER_ALL, "")
            name = "list_articles" if topic is None else "list_articles_in_topic"
        params: tuple[str | int, ...] = (when, last_id, limit)
        query = Q[name]
        if topic is not None:
            params = (topic, *params)
        async with self._read(query, params) as rows:
            return [_article(r) for r in rows]

    async def delete_article(self, article_id: str, *, now: datetime | None = None) -> Article:
        stamp = now or utcnow()
        async with self._transaction() as conn:
            row = await self._one(conn, Q["get_article"], (article_id,))
            if row is None:
                raise ArticleNotFound(article_id)
            existing = _article(row)
            tombstone = _changes.plan_delete(existing, now=stamp)
            if tombstone is None:
                return existing
            await conn.execute(Q["update_article"], _article_params(tombstone))
            await self._index_topics(conn, tombstone, stamp)
            seq = await self._record_event(conn, "article.deleted", tombstone, stamp)
            await self._mark_changed(conn, set(tombstone.topics), seq, stamp)
            return tombstone

    # -- topics -----------------------------------------------------------------

    async def list_topics(self) -> list[Topic]:
        async with self._read(Q["list_topics"]) as rows:
            return [_topic(r) for r in rows]

    async def get_topic(self, slug: str) -> Topic:
        async with self._read(Q["get_topic"], (slug,)) as rows:
            if not rows:
                raise TopicNotFound(slug)
            return _topic(rows[0])

    async def put_topic(
        self, slug: str, *, title: str, description: str, now: datetime | None = None
    ) -> tuple[Topic, bool]:
        stamp = format_time(now or utcnow())
        async with self._transaction() as conn:
            existed = await self._one(conn, Q["get_topic"], (slug,)) is not None
            params = {"slug": slug, "title": title, "description": description, "now": stamp}
            await conn.execute(Q["upsert_topic"], params)
            row = await self._one(conn, Q["get_topic"], (slug,))
        assert row is not None
        return _topic(row), not existed

    async def feed_state(self, topic: str | None) -> FeedState:
        params: tuple[str, ...] = ()
        if topic is None:
            query = Q["all_feed_state"]
        else:
            query, params = Q["topic_feed_state"], (topic,)
        async with self._read(query, params) as rows:
            if not rows:
                if topic is not None:
                    raise TopicNotFound(topic)
                return FeedState(0, None, None)
            row = rows[0]
            return FeedState(row["seq"], _pt(row["changed_at"]), _pt(row["updated_at"]))

    # -- events -----------------------------------------------------------------

    async def list_events(self, *, after: int = 0, limit: int = 100) -> list[Event]:
        async with self._read(Q["list_events"], (after, limit)) as rows:
            return [_event(r) for r in rows]

    # -- tokens -----------------------------------------------------------------

    async def create_token(
        self, *, name: str, role: Role, token_hash: str, now: datetime | None = None
    ) -> Token:
        try:
            async with self._transaction() as conn:
                params = (name, role, token_hash, format_time(now or utcnow()))
                row = await self._one(conn, Q["insert_token"], params)
        except StorageError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise TokenExists(name) from None
            raise
        assert row is not None
        return _token(row)

    async def get_token_by_hash(self, token_hash: str) -> Token | None:
        async with self._read(Q["get_token_by_hash"], (token_hash,)) as rows:
            return _token(rows[0]) if rows else None

    async def touch_token(self, token_id: int, *, now: datetime | None = None) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["touch_token"], (format_time(now or utcnow()), token_id))

    async def count_tokens(self) -> int:
        async with self._read(Q["count_tokens"]) as rows:
            return int(rows[0][0])

    async def list_tokens(self) -> list[Token]:
        async with self._read(Q["list_tokens"]) as rows:
            return [_token(r) for r in rows]

    async def revoke_token(self, name: str, *, now: datetime | None = None) -> Token | None:
        async with self._transaction() as conn:
            row = await self._one(conn, Q["revoke_token"], (format_time(now or utcnow()), name))
        return _token(row) if row else None

    # -- subscriptions and deliveries ------------------------------------------

    async def create_subscription(
        self,
        *,
        id: str,
        kind: SubscriptionKind,
        url: str,
        topics: Sequence[str],
        events: Sequence[str],
        secret: str | None,
        owner: str | None = None,
        status: SubscriptionStatus = "active",
        description: str = "",
        lease_expires_at: datetime | None = None,
        now: datetime | None = None,
    ) -> Subscription:
        params = {
            "id": id,
            "kind": kind,
            "owner": owner,
            "url": url,
            "topics": json.dumps(list(topics)),
            "events": json.dumps(list(events)),
            "secret": secret,
            "status": status,
            "description": description,
            "lease_expires_at": _t(lease_expires_at),
            "now": format_time(now or utcnow()),
        }
        async with self._transaction() as conn:
            row = await self._one(conn, Q["insert_subscription"], params)
        assert row is not None
        return _subscription(row)

    async def get_subscription(self, subscription_id: str) -> Subscription:
        async with self._read(Q["get_subscription"], (subscription_id,)) as rows:
            if not rows:
                raise SubscriptionNotFound(subscription_id)
            return _subscription(rows[0])

    async def create_deliveries(
        self, event_seq: int, subscription_ids: Sequence[str], *, now: datetime | None = None
    ) -> int:
        stamp = format_time(now or utcnow())
        async with self._transaction() as conn:
            before = conn.total_changes
            await conn.executemany(
                Q["insert_delivery"], [(event_seq, sid, stamp, stamp) for sid in subscription_ids]
            )
            return conn.total_changes - before

    async def get_delivery(self, delivery_id: int) -> Delivery:
        async with self._read(Q["get_delivery"], (delivery_id,)) as rows:
            if not rows:
                raise DeliveryNotFound(delivery_id)
            return _delivery(rows[0])

    async def claim_deliveries(
        self, *, worker: str, limit: int, lease: timedelta, now: datetime | None = None
    ) -> list[Delivery]:
        stamp = now or utcnow()
        params = {
            "until": format_time(stamp + lease),
            "worker": worker,
            "now": format_time(stamp),
            "limit": limit,
        }
        async with self._transaction() as conn:
            async with conn.execute(Q["claim_deliveries"], params) as cur:
                rows = await cur.fetchall()
        return sorted((_delivery(r) for r in rows), key=lambda d: (d.next_attempt_at, d.id))

    async def release_delivery(self, delivery_id: int, *, worker: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["release_delivery"], (delivery_id, worker))
