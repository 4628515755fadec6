"""Storage for Syndicate: one interface, a SQLite and a PostgreSQL backend."""

from __future__ import annotations

from .base import ListCursor, Storage
from .errors import (
    ArticleAlreadyPublished,
    ArticleExists,
    ArticleNotFound,
    Conflict,
    DeliveryNotFound,
    NotFound,
    StorageError,
    StorageUnavailable,
    SubscriptionNotFound,
    TokenAlreadyRevoked,
    TokenExists,
    TokenNameKeepsRole,
    TopicNotFound,
)

__all__ = [
    "ArticleAlreadyPublished",
    "ArticleExists",
    "ArticleNotFound",
    "Conflict",
    "DeliveryNotFound",
    "ListCursor",
    "NotFound",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "SubscriptionNotFound",
    "TokenAlreadyRevoked",
    "TokenExists",
    "TokenNameKeepsRole",
    "TopicNotFound",
    "open_storage",
]


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


async def open_storage(
    url: str, *, pool_min: int = 1, pool_max: int = 10, fast_paths: bool = True
) -> Storage:
    """Open (and migrate) the database named by ``url``.

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
    ``postgresql://user@host:port/dbname``.

    ``fast_paths=False`` turns off the backend's one speed-up that reaches into
    private internals, for the plain path instead: SQLite's change detection by
    reading the WAL index from shared memory (``sqlite/_wal_watch.py``; plain:
    ``PRAGMA data_version``, and SQLite's own WAL checkpoints), PostgreSQL's
    records built without their constructor (``postgres/_records.py``).
    """
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStorage, path_from_url

        return await SQLiteStorage.open(path_from_url(url), shm_watch=fast_paths)
    if is_postgres_url(url):
        from .postgres import PostgresStorage

        return await PostgresStorage.open(
            url, min_size=pool_min, max_size=pool_max, fast_records=fast_paths
        )
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://...")
