"""
Several processes may share one database. Article writes serialise on one
transaction-scoped advisory lock (``_WRITE_LOCK``), which gives them what the
single SQLite writer gives for free: events commit in ``seq`` order and the
read-decide-write of an article (does it exist, is the slug free) cannot race.
Delivery claims use ``FOR UPDATE SKIP LOCKED`` so claimers never wait on each
other. jsonb columns are decoded to Python objects by a codec set on every
pooled connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import (
    AsyncIterator,
    Iterator,
    Sequence,
)
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

import asyncpg

from .._group import GroupCommit, PutRequest
from .._sql import Migration, load_migrations, load_queries
from ..errors import (
    StorageError,
    StorageUnavailable,
)
from ..jsoncodec import dumps_text, loads_stored
from ..records import (
    Article,
    Event,
    PutResult,
    Subscription,
    owner_key,
    utcnow,
)
from ._token_cache import TokenCache

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]


from ._records import RecordBuilder, fast_record, plain_record

logger = logging.getLogger("storage.postgres")  # the name logs have always had

Q = load_queries("postgres")
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_CLOSE_TIMEOUT = 10.0
#: Advisory lock keys (fixed bigints; the hex spells "SYNDMIGR" and "SYNDWRIT").
_MIGRATION_LOCK = 0x5359_4E44_4D49_4752
_WRITE_LOCK = 0x5359_4E44_5752_4954
#: Simple protocol (no parameters), so both statements go in one round trip.
_BEGIN_WRITE = f"BEGIN; SELECT pg_advisory_xact_lock({_WRITE_LOCK})"
#: Later than every stored time: the "no cursor" upper bound.
_AFTER_ALL = datetime.max.replace(tzinfo=UTC)
#: Above every delivery id: the "no cursor" upper bound.
_ABOVE_ALL_IDS = 2**63 - 1
# OSError covers ConnectionError and TimeoutError (a connect timeout).
# InternalClientError is what asyncpg raises when a connection the server has
# just terminated is used before the close is noticed ("cannot switch to
# state ..."), and for a stale statement cache: either way, the connection is done.
_DISCONNECTS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def _is_disconnect(exc: BaseException) -> bool:
    """True for failures that say "the database cannot be reached", not "the query failed"."""
    if isinstance(exc, _DISCONNECTS):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return not isinstance(exc, ValueError)  # ClientConfigurationError: a bad DSN
    sqlstate = getattr(exc, "sqlstate", None)
    return (
        isinstance(exc, asyncpg.PostgresError)
        and isinstance(sqlstate, str)
        and sqlstate.startswith(("08", "57P"))
    )


@contextlib.contextmanager
def wrap_exceptions() -> Iterator[None]:
    """Map asyncpg and socket errors to the storage error tree."""
    try:
        yield
    except (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.InternalClientError,
        OSError,
    ) as exc:
        if _is_disconnect(exc):
            raise StorageUnavailable(f"PostgreSQL: {exc}") from exc
        if isinstance(exc, ValueError):
            raise  # a bad DSN option, like the ValueError for a malformed URL
        raise StorageError(f"PostgreSQL: {exc}") from exc


@contextlib.contextmanager
def _connecting() -> Iterator[None]:
    """A server that refuses a new connection for whatever reason (not accepting
    connections, no such database, bad password) cannot be reached right now."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        raise StorageUnavailable(f"PostgreSQL: {exc}") from exc


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=dumps_text, decoder=loads_stored
    )


if TYPE_CHECKING:
    _BaseConnection = asyncpg.Connection[asyncpg.Record]
else:
    _BaseConnection = asyncpg.Connection


class _Connection(_BaseConnection):
    """A pooled connection released without asyncpg's reset query (advisory
    unlock, CLOSE ALL, UNLISTEN, RESET ALL): one round trip saved per acquire.
    Nothing here leaves such state behind: advisory locks are transaction-scoped,
    there are no cursors, LISTENs or session settings. An open transaction is
    still rolled back on release (asyncpg does that before the reset query)."""

    def get_reset_query(self) -> str:
        return ""


class PostgresBase:
    """The pool, migrations and transactions every PostgreSQL mixin builds on.
    Create the composed ``PostgresStorage`` with ``await PostgresStorage.open(dsn)``."""

    def __init__(
        self, pool: asyncpg.Pool[asyncpg.Record], dsn: str, *, fast_records: bool = True
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        #: How rows become records (``_records``): the one switch for the fast path.
        self._record: RecordBuilder = fast_record if fast_records else plain_record
        self._group = GroupCommit(self._write_group)
        self._tokens = TokenCache(self._listen_connection)
        self._closed = False

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        migrate: bool = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        fast_records: bool = True,
    ) -> Self:
        migrations = load_migrations("postgres") if migrate else []
        with wrap_exceptions():
            with _connecting():
                pool = await asyncpg.create_pool(
                    dsn,
                    min_size=min_size,
                    max_size=max_size,
                    init=_init_connection,
                    timeout=connect_timeout,
                    connection_class=_Connection,
                )
            try:
                if migrate:
                    await cls._migrate(pool, migrations)
            except BaseException:
                pool.terminate()
                raise
        return cls(pool, dsn, fast_records=fast_records)

    @staticmethod
    async def _migrate(pool: asyncpg.Pool[asyncpg.Record], migrations: list[Migration]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            # Processes starting together queue on the lock; each then re-reads
            # the version, so only the first applies anything.
            await conn.execute(Q["pg_advisory_xact_lock"], _MIGRATION_LOCK)
            await conn.execute(Q["create_schema_version"])
            current = await conn.fetchval(Q["schema_version"])
            for migration in migrations:
                if migration.version <= current:
                    continue
                logger.info("applying migration", extra={"migration": migration.name})
                await conn.execute(migration.sql)
                await conn.execute(
                    Q["record_migration"], migration.version, migration.name, utcnow()
                )
            rows = await conn.fetch(Q["subscriptions_without_owner_key"])
            keys = [(owner_key(r["kind"], r["owner"], r["url"]), r["id"]) for r in rows]
            await conn.executemany(Q["set_owner_key"], keys)

    async def schema_version(self) -> int:
        rows = await self._fetch(Q["schema_version"])
        return int(rows[0][0])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._group.close()
        await self._tokens.close()
        try:
            async with asyncio.timeout(DEFAULT_CLOSE_TIMEOUT):
                await self._pool.close()
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("closing the pool failed; terminating it", extra={"error": str(exc)})
            self._pool.terminate()

    async def ping(self) -> None:
        await self._fetch(Q["ping"])

    # -- plumbing ---------------------------------------------------------------

    async def _lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection is gone. If so, every pooled
        connection is marked for replacement: one dead connection usually means
        the server restarted, and the idle ones have not noticed yet."""
        if not _is_disconnect(exc):
            return False
        logger.warning("PostgreSQL connection lost", extra={"error": str(exc)})
        await self._pool.expire_connections()
        return True

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[_Conn]:
        with _connecting():
            conn = await self._pool.acquire()
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run a read, retried once on a fresh connection if the first was dead."""
        with wrap_exceptions():
            for attempt in range(2):
                async with self._acquire() as conn:
                    try:
                        return await conn.fetch(sql, *args)
                    except Exception as exc:
                        if not await self._lost(exc) or attempt:
                            raise
        raise AssertionError("unreachable")

    async def _fetch_one(self, sql: str, *args: Any) -> asyncpg.Record | None:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Conn]:
        """One transaction on a pooled connection. A connection found dead at
        BEGIN (nothing done yet) is replaced once; later failures propagate."""
        with wrap_exceptions():
            for attempt in range(2):
                async with self._acquire() as conn:
                    transaction = conn.transaction()
                    try:
                        await transaction.start()
                    except Exception as exc:
                        if not await self._lost(exc) or attempt:
                            raise
                        continue
                    try:
                        yield conn
                    except Exception as exc:
                        if not await self._lost(exc):
                            await transaction.rollback()
                        raise
                    # On cancellation the pool's reset on release rolls back.
                    try:
                        await transaction.commit()
                    except Exception as exc:
                        await self._lost(exc)
                        raise
                    return

    @contextlib.asynccontextmanager
    async def _write_transaction(self) -> AsyncIterator[_Conn]:
        """A transaction holding the article write lock, begun and locked in one
        round trip (a simple-protocol BEGIN; SELECT), for writes that touch events.

        A sequence hands out seq at INSERT, but transactions commit in any order: a
        consumer that already read seq N+1 would never see N if N committed later.
        Holding one lock from before the INSERT until COMMIT makes seq order commit
        order. Taken first thing, it also keeps the existence and slug checks of an
        article write from racing. A connection found dead at BEGIN is replaced once."""
        with wrap_exceptions():
            for attempt in range(2):
                async with self._acquire() as conn:
                    try:
                        await conn.execute(_BEGIN_WRITE)
                    except Exception as exc:
                        if not await self._lost(exc) or attempt:
                            raise
                        continue
                    try:
                        yield conn
                    except Exception as exc:
                        if not await self._lost(exc):
                            await conn.execute("ROLLBACK")
                        raise
                    # On cancellation the pool's reset on release rolls back.
                    try:
                        status = await conn.execute("COMMIT")
                    except Exception as exc:
                        await self._lost(exc)
                        raise
                    if status != "COMMIT":  # the transaction had failed: nothing was written
                        raise StorageError(f"PostgreSQL answered {status} to COMMIT")
                    return

    async def _listen_connection(self) -> asyncpg.Connection[asyncpg.Record]:
        return await asyncpg.connect(self._dsn, timeout=DEFAULT_CONNECT_TIMEOUT)

    async def _write_group(self, requests: Sequence[PutRequest]) -> list[PutResult | Exception]:
        """Write a group of article puts (``GroupCommit``); the articles mixin has it."""
        raise NotImplementedError

    # -- records ----------------------------------------------------------------

    def _article(self, row: asyncpg.Record) -> Article:
        return self._record(Article, row, "topics")

    def _event(self, row: asyncpg.Record) -> Event:
        return self._record(Event, row, "topics")

    def _subscription(self, row: asyncpg.Record) -> Subscription:
        return self._record(Subscription, row, "topics", "events")
