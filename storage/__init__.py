"""Storage for Syndicate: one interface, a SQLite and a PostgreSQL backend."""

from __future__ import annotations

from .base import ListCursor, Storage
from .errors import (
    ArticleExists,
    ArticleNotFound,
    Conflict,
    DeliveryNotFound,
    NotFound,
    StorageError,
    StorageUnavailable,
    SubscriptionNotFound,
    TokenExists,
    TopicNotFound,
)

__all__ = [
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
    "TokenExists",
    "TopicNotFound",
    "open_storage",
]


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


async def open_storage(url: str, *, pool_min: int = 1, pool_max: int = 10) -> Storage:
    """Open (and migrate) the database named by ``url``.

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
    ``postgresql://user@host:port/dbname``.
    """
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStorage, path_from_url

        return await SQLiteStorage.open(path_from_url(url))
    if is_postgres_url(url):
        from .postgres import PostgresStorage

        return await PostgresStorage.open(url, min_size=pool_min, max_size=pool_max)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://...")
