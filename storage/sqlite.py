"""The embedded default backend: one SQLite file through aiosqlite.

One writer connection (writes are serialised by SQLite anyway; an asyncio lock
keeps one transaction at a time on it, ``BEGIN IMMEDIATE`` keeps other
processes out) and one reader connection, which in WAL mode sees only
committed data and never waits for the writer.

``feed_state`` (asked on every feed request) reads on a third, synchronous
connection in the event loop's own thread: an indexed point read takes a few
microseconds, far less than the hop to aiosqlite's thread and back. Its result is
cached until the WAL-index header changes (``_wal_watch.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from . import _changes
from ._group import GroupCommit, PutRequest
from ._sql import load_migrations, load_queries
from ._sqlite_bulk import distinct_rounds, fetch_all, insert_rows
from ._sqlite_checkpoint import Checkpointer
from ._sqlite_rows import (
    article_params,
    outcome_values,
    subscription_values,
    text_time,
    time_text,
    to_article,
    to_delivery,
    to_event,
    to_subscription,
    to_token,
    to_topic,
    to_worker,
)
from ._wal_watch import WalWatch
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
from .jsoncodec import dumps_text
from .records import (
    SUBSCRIPTION_KINDS,
    Article,
    ArticleDraft,
    Delivery,
    DeliveryOutcome,
    DeliveryStats,
    DeliveryStatus,
    Event,
    EventType,
    FeedState,
    PutResult,
    Role,
    Subscription,
    SubscriptionKind,
    SubscriptionStatus,
    Token,
    Topic,
    Worker,
    claim_scan,
    default_topic_title,
    format_time,
    new_event_id,
    owner_key,
    utcnow,
)

logger = logging.getLogger(__name__)

Q = load_queries("sqlite")
T = TypeVar("T")
DEFAULT_BUSY_TIMEOUT_MS = 10_000
#: The synchronous point-read connection must never stall the event loop: when
#: SQLite is busy for longer than this, the read goes through the reader thread.
INLINE_BUSY_TIMEOUT_MS = 5
#: How long a RESTART checkpoint waits for the write lock and for readers (it holds
#: writers off meanwhile); when it gives up, a later one tries again.
CHECKPOINT_BUSY_TIMEOUT_MS = 250
#: Most single article writes committed together in one transaction.
MAX_GROUP_COMMIT = 256
#: Topics whose feed state is kept between changes (one process's memory bound).
MAX_CACHED_FEED_STATES = 10_000
#: Sorts after every stored time: the "no cursor" upper bound.
_AFTER_ALL = "~"
#: Above every delivery id: the "no cursor" upper bound.
_ABOVE_ALL_IDS = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class _Rows:
    """An article write's rows, made before the write lock (``SQLiteStorage._rows``)."""

    articles: list[tuple[Any, ...]]
    #: Each event's row after its seq, which is known only under the lock; empty
    #: when SQLite builds the snapshots (``from_articles``).
    events: list[tuple[Any, ...]]
    #: JSON array of [event id, type, article id], one per event, when every event is
    #: of a distinct article: SQLite then makes each snapshot from the row just written.
    from_articles: str | None
    event_count: int
    #: JSON array of the ids whose topic rows are replaced, or None.
    indexed: str | None
    #: (topic, topic rows it gains), by topic.
    counts: list[tuple[str, int]]
    links: list[tuple[str, str, str]]
    #: JSON array of the topics only marked changed, or None.
    touched: str | None
    stamp: str


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

    def __init__(
        self,
        path: str,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        inline: sqlite3.Connection | None = None,
        wal_watch: WalWatch | None = None,
        checkpoint_connect: Callable[[], Awaitable[aiosqlite.Connection]] | None = None,
    ):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._inline = inline
        self._wal_watch = wal_watch
        self._lock = asyncio.Lock()
        # WAL checkpoints off the writer's thread (_sqlite_checkpoint.py); None keeps
        # SQLite's automatic checkpoint in the writer's commits.
        self._checkpointer = (
            None
            if wal_watch is None or checkpoint_connect is None
            else Checkpointer(wal_watch, checkpoint_connect, writer_lock=self._lock)
        )
        # Feed states read inline, valid while the database's change mark (the
        # WAL-index header, else PRAGMA data_version: either changes whenever any
        # connection, in any process, commits) stays the same.
        self._feed_states: dict[str | None, FeedState] = {}
        self._data_version: bytes | int | None = None
        self._group = GroupCommit(self._write_group, limit=MAX_GROUP_COMMIT)
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
            inline = None if path == ":memory:" else cls._connect_inline(path)
            watch = None if inline is None else WalWatch.open(path)
            checkpoint_connect = None
            if watch is not None:
                await writer.execute("PRAGMA wal_autocheckpoint = 0")
                checkpoint_connect = functools.partial(
                    cls._connect, path, CHECKPOINT_BUSY_TIMEOUT_MS
                )
        return cls(path, writer, reader, inline, watch, checkpoint_connect)

    @staticmethod
    def _connect_inline(path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {INLINE_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
        return conn

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
            async with conn.execute(Q["subscriptions_without_owner_key"]) as cur:
                keys = [
                    (owner_key(r["kind"], r["owner"], r["url"]), r["id"])
                    for r in await cur.fetchall()
                ]
            await conn.executemany(Q["set_owner_key"], keys)
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
        await self._group.close()
        if self._checkpointer is not None:
            await self._checkpointer.close()
        self._wal_watch = None  # its memory goes with the last connection
        if self._inline is not None:
            self._inline.close()
        await self._reader.close()
        await self._writer.close()

    async def ping(self) -> None:
        async with self._read("SELECT 1"):
            pass

    # -- plumbing ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _read(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> AsyncIterator[list[Any]]:
        with wrap_exceptions():
            async with self._reader.execute(sql, params) as cur:
                rows = await cur.fetchall()
        yield list(rows)

    async def _read_rows(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """``_read`` for reads of many rows: one step on the reader's thread, not one
        per row (each gives the GIL away and waits to take it back; see _sqlite_bulk)."""
        reader = self._reader
        with wrap_exceptions():
            rows: list[dict[str, Any]] = await reader._execute(  # type: ignore[no-untyped-call]
                fetch_all, reader._conn, sql, params
            )
        return rows

    def _read_inline(self, sql: str, params: Sequence[Any]) -> list[Any] | None:
        """A short read on the loop thread; None when SQLite is busy (ask the reader)."""
        if self._inline is None or self._closed:
            return None
        try:
            return self._inline.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return None
            with wrap_exceptions():
                raise

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            with wrap_exceptions():
                try:
                    await self._writer.execute("BEGIN IMMEDIATE")
                    yield self._writer
                    await self._writer.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise
                checkpointer = self._checkpointer
                # Not once closing: the writer may be closed by now, and the WAL
                # index unmapped with it.
                if checkpointer is not None and not self._closed and checkpointer.inline_due():
                    # One job reading the PRAGMA's row to the end (Checkpointer.inline):
                    # a cursor left open stays a statement in progress on the writer.
                    await self._writer._execute(checkpointer.inline, self._writer._conn)  # type: ignore[no-untyped-call]
        self._after_commit()

    def _after_commit(self) -> None:
        if self._checkpointer is not None and not self._closed:
            self._checkpointer.after_commit()

    async def _rollback(self) -> None:
        # A cancelled ``await execute(...)`` still runs in aiosqlite's thread, and
        # that thread runs requests in order: a ROLLBACK sent now always comes
        # after a BEGIN (or COMMIT) that was cancelled while waiting, so the
        # connection never stays inside a transaction nobody owns.
        try:
            await asyncio.shield(self._writer.execute("ROLLBACK"))
        except sqlite3.ProgrammingError:
            pass  # the connection was closed under us: nothing left to roll back
        except sqlite3.OperationalError as exc:
            if "no transaction is active" not in str(exc):
                raise

    @staticmethod
    async def _one(conn: aiosqlite.Connection, sql: str, params: Any = ()) -> sqlite3.Row | None:
        async with conn.execute(sql, params) as cur:
            row: sqlite3.Row | None = await cur.fetchone()
            return row

    # -- articles ---------------------------------------------------------------

    # Article writes run as one synchronous function on the writer's own thread:
    # a dozen statements cost one hop to that thread instead of a dozen.

    async def _in_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` inside one ``BEGIN IMMEDIATE`` transaction on the writer thread."""

        checkpointer = self._checkpointer

        def transaction() -> T:
            conn = self._writer._conn  # aiosqlite's own sqlite3 connection, on its thread
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if checkpointer is not None and checkpointer.inline_due():
                checkpointer.inline(conn)
            return result

        async with self._lock:
            with wrap_exceptions():
                # aiosqlite runs queued functions in order on its thread (pinned version).
                result: T = await asyncio.shield(self._writer._execute(transaction))  # type: ignore[no-untyped-call]
        self._after_commit()
        return result

    def _write_puts(
        self,
        conn: sqlite3.Connection,
        requests: Sequence[PutRequest],
        prepared: _changes.Prepared[_Rows] | None = None,
    ) -> list[PutResult | Exception]:
        """Many article writes in a handful of statements (on the writer, in its
        transaction): read what they touch, decide in Python, write the changes.
        ``prepared`` is the same decided before the write lock (``_prepare``): used
        when what it was decided from is still what the database holds."""
        state = self._state(conn, requests)
        if prepared is None or prepared.state != state:
            prepared = self._plan(requests, state)
        for rows in prepared.statements:
            self._write_rows(conn, rows)
        return prepared.results()

    async def _prepare(self, requests: Sequence[PutRequest]) -> _changes.Prepared[_Rows]:
        """``requests`` decided from what the database holds now, on the reader and
        this thread, before the write lock: the decisions and the rows (~16 µs per
        article) then do not hold up the writer. Under the lock the reads are made
        again; the plan stands when they answer the same (``_write_puts``)."""
        reader = self._reader
        with wrap_exceptions():
            state: _changes.State = await reader._execute(  # type: ignore[no-untyped-call]
                self._state, reader._conn, requests
            )
        return self._plan(requests, state)

    @classmethod
    def _state(cls, conn: sqlite3.Connection, requests: Sequence[PutRequest]) -> _changes.State:
        """The stored articles the requests name, and who holds the slugs they want."""
        ids = json.dumps(list(dict.fromkeys(r.draft.id for r in requests)))
        existing = {row["id"]: to_article(row) for row in conn.execute(Q["get_articles"], (ids,))}
        return existing, cls._slug_owners(conn, [r.draft for r in requests])

    @classmethod
    def _plan(
        cls, requests: Sequence[PutRequest], state: _changes.State
    ) -> _changes.Prepared[_Rows]:
        existing, owners = state
        plans = _changes.plan_puts(
            [(r.draft, r.create_only, r.now) for r in requests], existing, owners
        )
        writes = [(p.event, p.article) for p in plans if isinstance(p, _changes.Change) and p.event]
        rows = [cls._rows(writes, existing, max(r.now for r in requests))] if writes else []
        return _changes.Prepared(state, plans, rows)

    @staticmethod
    def _slug_owners(conn: sqlite3.Connection, drafts: Sequence[ArticleDraft]) -> dict[str, str]:
        wanting = _changes.slug_wants(drafts)
        rows = conn.execute(Q["slug_owners"], (json.dumps(sorted(wanting)),))
        owners = {row["slug"]: row["id"] for row in rows}
        crowded = _changes.crowded_bases(wanting, owners)
        if crowded:
            # One step for every base's range (see _sqlite_bulk): a batch re-importing
            # 500 titles made 500 statements and fetched their rows one by one.
            found = fetch_all(conn, Q["slugs_in_ranges"], (json.dumps(crowded),))
            owners.update((row["slug"], row["id"]) for row in found)
        return owners

    @staticmethod
    def _rows(
        writes: Sequence[tuple[EventType, Article]],
        before: Mapping[str, Article],
        now: datetime,
    ) -> _Rows:
        """The rows that store the articles (in order; an id may come twice, the last
        wins), one event each, their topic rows and counts, and every touched
        topic's marker: all but what needs the event seqs, known under the lock."""
        final = {a.id: a for _, a in writes}
        indexed = [article_id for article_id in final if article_id in before]
        live = [a for a in final.values() if not a.deleted]
        counts = Counter(topic for a in live for topic in a.topics)
        touched = sorted({topic for _, a in writes for topic in a.topics} - counts.keys())
        # An id written twice (group commit) has an event for the version that the
        # row no longer holds: those snapshots are made here.
        # SQLite before 3.42 cuts json_extract's text at a NUL: such an id (the API
        # never lets one in) would not find its row.
        in_sql = len(final) == len(writes) and not any("\x00" in i for i in final)
        return _Rows(
            articles=[article_params(a) for _, a in writes],
            events=[]
            if in_sql
            else [
                (
                    new_event_id(),
                    event,
                    a.id,
                    dumps_text(a.topics),
                    dumps_text(a.to_json()),
                    format_time(a.updated_at),
                )
                for event, a in writes
            ],
            from_articles=dumps_text([(new_event_id(), event, a.id) for event, a in writes])
            if in_sql
            else None,
            event_count=len(writes),
            indexed=json.dumps(indexed) if indexed else None,
            counts=sorted(counts.items()),
            links=[(topic, a.id, format_time(a.published_at)) for a in live for topic in a.topics],
            touched=json.dumps(touched) if touched else None,
            stamp=format_time(now),
        )

    @staticmethod
    def _write_rows(conn: sqlite3.Connection, rows: _Rows) -> None:
        """Write ``rows`` (on the writer, in its transaction)."""
        insert_rows(conn, Q["save_article"], rows.articles)
        first = int(conn.execute(Q["last_event_seq"]).fetchone()[0]) + 1
        if rows.from_articles is not None:
            made = conn.execute(Q["insert_events_from_articles"], (first, rows.from_articles))
            if made.rowcount != rows.event_count:  # never seen; the seqs would be off
                raise StorageError(
                    f"SQLite: {made.rowcount} of {rows.event_count} events found their article"
                )
        else:
            insert_rows(
                conn,
                Q["insert_event_at"],
                [(seq, *event) for seq, event in enumerate(rows.events, start=first)],
            )
        last, stamp = first + rows.event_count - 1, rows.stamp
        if rows.indexed is not None:
            conn.execute(Q["uncount_and_mark_article_topics"], (last, stamp, rows.indexed))
            conn.execute(Q["delete_article_topics"], (rows.indexed,))
        insert_rows(
            conn,
            Q["add_topic_count"],
            [(topic, default_topic_title(topic), stamp, stamp, n, last, stamp)
             for topic, n in rows.counts],
        )  # fmt: skip
        insert_rows(conn, Q["insert_article_topic"], rows.links)
        if rows.touched is not None:
            conn.execute(Q["mark_topics_changed"], (last, stamp, rows.touched))

    @classmethod
    def _apply(
        cls,
        conn: sqlite3.Connection,
        writes: Sequence[tuple[EventType, Article]],
        before: Mapping[str, Article],
        now: datetime,
    ) -> None:
        cls._write_rows(conn, cls._rows(writes, before, now))

    async def put_article(
        self, draft: ArticleDraft, *, create_only: bool = False, now: datetime | None = None
    ) -> PutResult:
        # Group commit (storage/_group.py): single writes that arrive while the
        # writer is busy are written together in its next transaction.
        return await self._group.put(PutRequest(draft, create_only, now or utcnow()))

    async def _write_group(self, requests: Sequence[PutRequest]) -> list[PutResult | Exception]:
        return await self._in_writer(lambda conn: self._write_puts(conn, requests))

    async def put_articles(
        self, drafts: Sequence[ArticleDraft], *, now: datetime | None = None
    ) -> list[PutResult]:
        stamp = now or utcnow()
        requests = [PutRequest(d, False, stamp) for d in drafts]
        prepared = await self._prepare(requests)
        outcomes = await self._in_writer(lambda conn: self._write_puts(conn, requests, prepared))
        results = []
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
            results.append(outcome)
        return results

    async def get_article(self, article_id: str) -> Article:
        async with self._read(Q["get_article"], (article_id,)) as rows:
            if not rows:
                raise ArticleNotFound(article_id)
            return to_article(rows[0])

    async def get_article_by_slug(self, slug: str) -> Article:
        async with self._read(Q["get_article_by_slug"], (slug,)) as rows:
            if not rows:
                raise ArticleNotFound(slug)
            return to_article(rows[0])

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
            return [to_article(r) for r in rows]

    async def delete_article(self, article_id: str, *, now: datetime | None = None) -> Article:
        stamp = now or utcnow()

        def delete(conn: sqlite3.Connection) -> Article:
            row = conn.execute(Q["get_article"], (article_id,)).fetchone()
            if row is None:
                raise ArticleNotFound(article_id)
            existing = to_article(row)
            tombstone = _changes.plan_delete(existing, now=stamp)
            if tombstone is None:
                return existing
            self._apply(conn, [("article.deleted", tombstone)], {article_id: existing}, stamp)
            return tombstone

        return await self._in_writer(delete)

    # -- topics -----------------------------------------------------------------

    async def list_topics(self) -> list[Topic]:
        async with self._read(Q["list_topics"]) as rows:
            return [to_topic(r) for r in rows]

    async def get_topic(self, slug: str) -> Topic:
        async with self._read(Q["get_topic"], (slug,)) as rows:
            if not rows:
                raise TopicNotFound(slug)
            return to_topic(rows[0])

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
        return to_topic(row), not existed

    def _change_mark(self) -> bytes | int | None:
        """A value that changes whenever anyone commits (None: unknown, SQLite busy)."""
        if self._wal_watch is not None and not self._closed:
            header = self._wal_watch.header()
            if header is not None:
                return header
        version = self._read_inline(Q["data_version"], ())
        return None if version is None else int(version[0][0])

    def cached_feed_state(self, topic: str | None) -> FeedState | None:
        watch = self._wal_watch
        if watch is None or self._closed:
            return None
        header = watch.header()
        if header is None or header != self._data_version:
            return None
        return self._feed_states.get(topic)

    async def feed_state(self, topic: str | None) -> FeedState:
        version = self._change_mark()
        if version is not None:
            if version != self._data_version:
                self._feed_states.clear()
                self._data_version = version
            else:
                cached = self._feed_states.get(topic)
                if cached is not None:
                    return cached
        params: tuple[str, ...] = ()
        if topic is None:
            query = Q["all_feed_state"]
        else:
            query, params = Q["topic_feed_state"], (topic,)
        rows = self._read_inline(query, params)
        if rows is None:
            async with self._read(query, params) as fetched:
                rows = fetched
        if not rows:
            if topic is not None:
                raise TopicNotFound(topic)
            return FeedState(0, None, None)
        row = rows[0]
        state = FeedState(row["seq"], text_time(row["changed_at"]), text_time(row["updated_at"]))
        if (
            version is not None
            and self._data_version == version  # no newer reader cleared it meanwhile
            and len(self._feed_states) < MAX_CACHED_FEED_STATES
        ):
            # Read after data_version: if a commit came in between, the next call
            # sees a new version and reads again.
            self._feed_states[topic] = state
        return state

    # -- events -----------------------------------------------------------------

    async def list_events(
        self, *, after: int = 0, limit: int = 100, with_data: bool = True
    ) -> list[Event]:
        query = Q["list_events" if with_data else "list_event_heads"]
        rows = await self._read_rows(query, (after, limit))
        return sorted((to_event(r) for r in rows), key=lambda e: e.seq)

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
        return to_token(row)

    async def get_token_by_hash(self, token_hash: str) -> Token | None:
        rows = self._read_inline(Q["get_token_by_hash"], (token_hash,))
        if rows is None:
            async with self._read(Q["get_token_by_hash"], (token_hash,)) as fetched:
                rows = fetched
        return to_token(rows[0]) if rows else None

    async def touch_token(self, token_id: int, *, now: datetime | None = None) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["touch_token"], (format_time(now or utcnow()), token_id))

    async def count_tokens(self) -> int:
        async with self._read(Q["count_tokens"]) as rows:
            return int(rows[0][0])

    async def list_tokens(self) -> list[Token]:
        async with self._read(Q["list_tokens"]) as rows:
            return [to_token(r) for r in rows]

    async def revoke_token(self, name: str, *, now: datetime | None = None) -> Token | None:
        async with self._transaction() as conn:
            row = await self._one(conn, Q["revoke_token"], (format_time(now or utcnow()), name))
        return to_token(row) if row else None

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
        topic_url: str | None = None,
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
            "lease_expires_at": time_text(lease_expires_at),
            "topic_url": topic_url,
            "now": format_time(now or utcnow()),
            "owner_key": owner_key(kind, owner, url),
        }
        async with self._transaction() as conn:
            row = await self._one(conn, Q["insert_subscription"], params)
        assert row is not None
        return to_subscription(row)

    async def get_subscription(self, subscription_id: str) -> Subscription:
        async with self._read(Q["get_subscription"], (subscription_id,)) as rows:
            if not rows:
                raise SubscriptionNotFound(subscription_id)
            return to_subscription(rows[0])

    async def find_websub_subscription(self, callback: str, topic_url: str) -> Subscription | None:
        async with self._read(Q["find_websub_subscription"], (callback, topic_url)) as rows:
            return to_subscription(rows[0]) if rows else None

    async def get_subscriptions(self, subscription_ids: Sequence[str]) -> dict[str, Subscription]:
        rows = await self._read_rows(Q["get_subscriptions"], (json.dumps(list(subscription_ids)),))
        return {r["id"]: to_subscription(r) for r in rows}

    async def list_subscriptions(
        self,
        *,
        owner: str | None = None,
        kind: SubscriptionKind | None = None,
        limit: int = 100,
        after_id: str | None = None,
    ) -> list[Subscription]:
        params = {"owner": owner, "kind": kind, "after_id": after_id or "", "limit": limit}
        name = "list_subscriptions" if owner is None else "list_owner_subscriptions"
        async with self._read(Q[name], params) as rows:
            return [to_subscription(r) for r in rows]

    async def list_active_subscriptions(
        self, *, now: datetime | None = None, kind: SubscriptionKind | None = None
    ) -> list[Subscription]:
        stamp = format_time(now or utcnow())
        rows = await self._read_rows(Q["list_active_subscriptions"], (stamp, kind))
        return sorted((to_subscription(r) for r in rows), key=lambda s: s.id)

    async def update_subscription(
        self, subscription_id: str, changes: Mapping[str, Any], *, now: datetime | None = None
    ) -> Subscription:
        values = subscription_values(changes)
        # Column names come from SUBSCRIPTION_MUTABLE (checked above), values are bound.
        assignments = "".join(f"{column} = :{column}, " for column in values)
        sql = Q["update_subscription"].format(assignments=assignments)
        params = {**values, "id": subscription_id, "now": format_time(now or utcnow())}
        async with self._transaction() as conn:
            row = await self._one(conn, sql, params)
            if row is not None and "url" in values:
                key = owner_key(row["kind"], row["owner"], row["url"])
                row = await self._one(conn, Q["set_host_owner_key"], (key, subscription_id)) or row
        if row is None:
            raise SubscriptionNotFound(subscription_id)
        return to_subscription(row)

    async def count_websub_subscriptions(
        self, *, host: str | None = None, topic_url: str | None = None
    ) -> int:
        if host is not None:
            sql = Q["count_websub_subscriptions_of_owner"]
            params = {"owner_key": owner_key("websub", None, f"//{host}"), "topic_url": topic_url}
        elif topic_url is not None:
            sql, params = Q["count_websub_subscriptions_of_topic"], {"topic_url": topic_url}
        else:
            sql, params = Q["count_websub_subscriptions"], {}
        async with self._read(sql, params) as rows:
            return int(rows[0][0])

    async def delete_subscription(self, subscription_id: str) -> None:
        async with self._transaction() as conn:
            row = await self._one(conn, Q["delete_subscription"], (subscription_id,))
        if row is None:
            raise SubscriptionNotFound(subscription_id)

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

    async def fan_out(
        self,
        pairs: Sequence[tuple[int, str]],
        *,
        cursor: str,
        up_to: int,
        now: datetime | None = None,
    ) -> int:
        stamp = format_time(now or utcnow())

        def fan_out(conn: sqlite3.Connection) -> int:  # one hop (see _in_writer)
            before = conn.total_changes
            if pairs:
                conn.execute(Q["fan_out_deliveries"], (dumps_text(pairs), stamp))
            created = conn.total_changes - before
            conn.execute(Q["move_cursor"], (cursor, up_to))
            return created

        return await self._in_writer(fan_out)

    async def get_cursor(self, name: str) -> int:
        async with self._read(Q["get_cursor"], (name,)) as rows:
            return int(rows[0][0]) if rows else 0

    async def get_events(self, seqs: Sequence[int]) -> dict[int, Event]:
        rows = await self._read_rows(Q["get_events"], (json.dumps(list(seqs)),))
        return {r["seq"]: to_event(r) for r in rows}

    async def get_event_ids(self, seqs: Sequence[int]) -> dict[int, str]:
        rows = await self._read_rows(Q["get_event_ids"], (json.dumps(list(seqs)),))
        return {r["seq"]: r["id"] for r in rows}

    async def get_delivery(self, delivery_id: int) -> Delivery:
        async with self._read(Q["get_delivery"], (delivery_id,)) as rows:
            if not rows:
                raise DeliveryNotFound(delivery_id)
            return to_delivery(rows[0])

    async def list_deliveries(
        self,
        subscription_id: str,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Delivery]:
        params = {
            "subscription_id": subscription_id,
            "status": status,
            "before_id": _ABOVE_ALL_IDS if before_id is None else before_id,
            "limit": limit,
        }
        name = "list_deliveries" if status is None else "list_deliveries_with_status"
        async with self._read(Q[name], params) as rows:
            return [to_delivery(r) for r in rows]

    async def complete_deliveries(
        self,
        outcomes: Sequence[DeliveryOutcome],
        *,
        worker: str,
        disable_after: timedelta,
        now: datetime | None = None,
    ) -> list[str]:
        if not outcomes:
            return []
        stamp = now or utcnow()
        at = format_time(stamp)
        ids = json.dumps([o.delivery_id for o in outcomes])

        # One hop to the writer thread for the whole batch (see _in_writer), and
        # a few steps there whatever its size (see _sqlite_bulk).
        def complete(conn: sqlite3.Connection) -> list[str]:
            (found,) = conn.execute(Q["deliveries_of"], (ids,)).fetchone()
            owners = {int(key): owner for key, owner in json.loads(found).items()}
            live = [o for o in outcomes if o.delivery_id in owners]
            for part in distinct_rounds(live, key=lambda o: o.delivery_id):
                values = dumps_text([outcome_values(o) for o in part])
                conn.execute(Q["complete_deliveries"], {"outcomes": values, "now": at})
            succeeded = {owners[o.delivery_id] for o in live if o.succeeded}
            failed = {owners[o.delivery_id] for o in live} - succeeded
            if succeeded:
                conn.execute(Q["subscriptions_succeeded"], (at, json.dumps(sorted(succeeded))))
            if not failed:
                return []
            conn.execute(Q["subscriptions_failed"], (at, json.dumps(sorted(failed))))
            params = {
                "ids": json.dumps(sorted(failed)),
                "now": at,
                "cutoff": format_time(stamp - disable_after),
            }
            rows = conn.execute(Q["disable_failing_subscriptions"], params)
            return sorted(r["id"] for r in rows)

        return await self._in_writer(complete)

    async def retry_delivery(self, delivery_id: int, *, now: datetime | None = None) -> Delivery:
        async with self._transaction() as conn:
            params = (format_time(now or utcnow()), delivery_id)
            row = await self._one(conn, Q["retry_delivery"], params)
        if row is None:
            raise DeliveryNotFound(delivery_id)
        return to_delivery(row)

    async def recover_deliveries(
        self, subscription_id: str, *, since: datetime, now: datetime | None = None
    ) -> int:
        params = {
            "subscription_id": subscription_id,
            "since": format_time(since),
            "now": format_time(now or utcnow()),
        }
        async with self._transaction() as conn:
            async with conn.execute(Q["recover_deliveries"], params) as cur:
                return cur.rowcount

    async def delivery_stats(self, *, now: datetime | None = None) -> DeliveryStats:
        async with self._read(Q["delivery_stats"], (format_time(now or utcnow()),)) as rows:
            row = rows[0]
            return DeliveryStats(row["pending"], row["due"], text_time(row["oldest_pending_at"]))

    # -- live processes ---------------------------------------------------------

    async def register_worker(
        self, worker_id: str, *, hostname: str, pid: int, kind: str, now: datetime | None = None
    ) -> None:
        params = {
            "id": worker_id, "hostname": hostname, "pid": pid, "kind": kind,
            "now": format_time(now or utcnow()),
        }  # fmt: skip
        async with self._transaction() as conn:
            await conn.execute(Q["register_worker"], params)

    async def heartbeat_worker(self, worker_id: str, *, now: datetime | None = None) -> bool:
        async with self._transaction() as conn:
            row = await self._one(
                conn, Q["heartbeat_worker"], (format_time(now or utcnow()), worker_id)
            )
        return row is not None

    async def unregister_worker(self, worker_id: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["unregister_worker"], (worker_id,))

    async def release_workers(
        self,
        *,
        stale_after: timedelta,
        keep: str,
        dead: Sequence[str] = (),
        now: datetime | None = None,
    ) -> dict[str, int]:
        params = {
            "stale_before": format_time((now or utcnow()) - stale_after),
            "dead": json.dumps(list(dead)),
            "keep": keep,
        }

        def release(conn: sqlite3.Connection) -> dict[str, int]:
            ids = [row[0] for row in conn.execute(Q["dead_workers"], params)]
            if not ids:
                return {}
            released = dict.fromkeys(ids, 0)
            for worker, count in conn.execute(Q["count_worker_claims"], (json.dumps(ids),)):
                released[worker] = count
            conn.execute(Q["release_worker_claims"], (json.dumps(ids),))
            conn.execute(Q["delete_workers"], (json.dumps(ids),))
            return released

        return await self._in_writer(release)

    async def list_workers(self, *, now: datetime | None = None) -> list[Worker]:
        async with self._read(Q["list_workers"], {"now": format_time(now or utcnow())}) as rows:
            return [to_worker(r) for r in rows]

    async def claim_deliveries(
        self,
        *,
        worker: str,
        limit: int,
        lease: timedelta,
        now: datetime | None = None,
        kind: SubscriptionKind | None = None,
        per_owner: int | None = None,
        owner_rooms: Mapping[str, int] | None = None,
    ) -> list[Delivery]:
        stamp = now or utcnow()
        params = {
            "until": format_time(stamp + lease),
            "worker": worker,
            "now": format_time(stamp),
            "per_owner": limit if per_owner is None else per_owner,
            "rooms": json.dumps(dict(owner_rooms or {})),
            "scan": claim_scan(limit),
        }

        # One hop to the writer thread (see _in_writer), rows converted there too,
        # and three steps there, not one per row (see _sqlite_bulk).
        def claim(conn: sqlite3.Connection) -> list[Delivery]:
            claimed: list[Delivery] = []
            for each in [kind] if kind else SUBSCRIPTION_KINDS:
                left = limit - len(claimed)
                if left <= 0:
                    break
                due = {**params, "kind": each, "limit": left}
                (ids,) = conn.execute(Q["due_deliveries"], due).fetchone()
                if ids == "[]":
                    continue
                conn.execute(Q["claim_deliveries"], {**params, "ids": ids})
                claimed += [to_delivery(r) for r in fetch_all(conn, Q["deliveries_by_id"], (ids,))]
            return claimed

        claimed = await self._in_writer(claim)
        return sorted(claimed, key=lambda d: (d.attempts > 0, d.next_attempt_at, d.id))

    async def release_delivery(self, delivery_id: int, *, worker: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["release_delivery"], (delivery_id, worker))

    async def defer_deliveries(
        self, delivery_ids: Sequence[int], *, worker: str, until: datetime
    ) -> None:
        params = (format_time(until), json.dumps(list(delivery_ids)), worker)
        async with self._transaction() as conn:
            await conn.execute(Q["defer_deliveries"], params)
