"""The embedded default backend's plumbing: one SQLite file through aiosqlite.

One writer connection (writes are serialised by SQLite anyway; an asyncio lock
keeps one transaction at a time on it, ``BEGIN IMMEDIATE`` keeps other
processes out) and one reader connection, which in WAL mode sees only
committed data and never waits for the writer.

``feed_state`` (asked on every feed request) reads on a third, synchronous
connection in the event loop's own thread: an indexed point read takes a few
microseconds, far less than the hop to aiosqlite's thread and back. Its result is
cached until the WAL-index header changes (``_wal_watch.py``).

The verbs live in one mixin per domain (``articles.py``, ``topics.py``, ...), each
built on ``SQLiteBase``; ``__init__.py`` composes them into ``SQLiteStorage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite

from .._group import GroupCommit, PutRequest
from .._sql import load_migrations, load_queries
from ..errors import (
    StorageError,
    StorageUnavailable,
)
from ..records import (
    FeedState,
    PutResult,
    format_time,
    owner_key,
    utcnow,
)
from ._bulk import fetch_all
from ._checkpoint import Checkpointer
from ._wal_watch import WalWatch

logger = logging.getLogger("storage.sqlite")  # the name logs have always had

Q = load_queries("sqlite")
T = TypeVar("T")


def on_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
    """Run ``fn(sqlite3_connection, *args)`` on ``conn``'s own thread, in order with
    the requests queued before it: a dozen statements for one hop instead of a dozen
    hops. aiosqlite has no public way to do this, so this is the one place that
    touches its private ``_execute`` and ``_conn`` (aiosqlite is pinned; every write
    and every bulk read goes through here, so an upgrade that moves them fails the
    whole suite at once). decisions.md: "Why one seam into aiosqlite?"."""
    run: Callable[..., Awaitable[T]] = conn._execute
    return run(fn, conn._conn, *args)


DEFAULT_BUSY_TIMEOUT_MS = 10_000
#: The synchronous point-read connection must never stall the event loop: when
#: SQLite is busy for longer than this, the read goes through the reader thread.
INLINE_BUSY_TIMEOUT_MS = 5
#: How long a RESTART checkpoint waits for the write lock and for readers (it holds
#: writers off meanwhile); when it gives up, a later one tries again.
CHECKPOINT_BUSY_TIMEOUT_MS = 250
#: Most single article writes committed together in one transaction.
MAX_GROUP_COMMIT = 256


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


class SQLiteBase:
    """The connections, migrations and transactions every SQLite mixin builds on.
    Create the composed ``SQLiteStorage`` with ``await SQLiteStorage.open(path)``."""

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
        # WAL checkpoints off the writer's thread (_checkpoint.py); None keeps
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
        cls,
        path: str,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        migrate: bool = True,
        shm_watch: bool = True,
    ) -> Self:
        """Open (and migrate) ``path``. ``shm_watch=False`` is the one switch off the
        speed-up that reads SQLite's WAL index from shared memory (``_wal_watch``):
        changes are then noticed through ``PRAGMA data_version``, and SQLite
        checkpoints the WAL itself (``wal_autocheckpoint``) in the writer's commits."""
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
            watch = None if inline is None or not shm_watch else WalWatch.open(path)
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
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            # Not a database (or unreadable): close it, or its thread keeps the
            # process alive after the error has been reported.
            await conn.close()
            raise
        return conn

    @staticmethod
    async def _migrate(conn: aiosqlite.Connection) -> None:
        await conn.execute(Q["create_schema_version"])
        await conn.execute("BEGIN IMMEDIATE")
        try:
            async with conn.execute(Q["schema_version"]) as cur:
                row = await cur.fetchone()
            current = row[0] if row else 0
            for migration in load_migrations("sqlite"):
                if migration.version <= current:
                    continue
                logger.info("applying migration", extra={"migration": migration.name})
                for statement in _statements(migration.sql):
                    await conn.execute(statement)
                params = (migration.version, migration.name, format_time(utcnow()))
                await conn.execute(Q["record_migration"], params)
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
        async with self._read(Q["schema_version"]) as rows:
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
        async with self._read(Q["ping"]):
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
        per row (each gives the GIL away and waits to take it back; see _bulk)."""
        with wrap_exceptions():
            rows: list[dict[str, Any]] = await on_thread(self._reader, fetch_all, sql, params)
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
                    await on_thread(self._writer, checkpointer.inline)
        self._after_commit()

    def _after_commit(self) -> None:
        if self._checkpointer is not None and not self._closed:
            self._checkpointer.after_commit()

    def _events_committed(self) -> None:
        """Called after a commit of this process that may have written events: the
        change log's watchers are told at once (``ChangeLogMixin.watch_events``)."""

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

    # -- the writer's own thread -----------------------------------------------

    # Article writes run as one synchronous function on the writer's own thread:
    # a dozen statements cost one hop to that thread instead of a dozen.

    async def _in_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` inside one ``BEGIN IMMEDIATE`` transaction on the writer thread."""

        checkpointer = self._checkpointer

        def transaction(conn: sqlite3.Connection) -> T:
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
                result: T = await asyncio.shield(on_thread(self._writer, transaction))
        self._after_commit()
        return result

    async def _write_group(self, requests: Sequence[PutRequest]) -> list[PutResult | Exception]:
        """Write a group of article puts (``GroupCommit``); the articles mixin has it."""
        raise NotImplementedError
