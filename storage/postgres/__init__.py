"""The scale-out backend: PostgreSQL through an asyncpg connection pool.

``PostgresStorage`` is composed of one mixin per domain, all built on
``PostgresBase`` (pool, migrations, transactions, the write lock: ``_base.py``),
and declares that it implements ``storage.Storage``, so mypy checks every verb's
signature against it.
"""

from __future__ import annotations

from ..base import Storage
from ._base import _WRITE_LOCK, PostgresBase, Q, wrap_exceptions
from .articles import ArticlesMixin
from .attempts import AttemptsMixin
from .changelog import ChangeLogMixin
from .deliveries import DeliveriesMixin
from .portal import PortalMixin
from .site import SiteMixin
from .subscriptions import SubscriptionsMixin
from .tokens import TokensMixin
from .topics import TopicsMixin
from .workers import WorkersMixin

__all__ = ["_WRITE_LOCK", "PostgresBase", "PostgresStorage", "Q", "wrap_exceptions"]


class PostgresStorage(
    ArticlesMixin,
    TopicsMixin,
    TokensMixin,
    SubscriptionsMixin,
    DeliveriesMixin,
    WorkersMixin,
    SiteMixin,
    ChangeLogMixin,
    AttemptsMixin,
    PortalMixin,
    Storage,
):
    """``Storage`` on PostgreSQL. Create with ``await PostgresStorage.open(dsn)``."""
