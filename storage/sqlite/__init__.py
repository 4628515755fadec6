"""The embedded default backend: one SQLite file through aiosqlite.

``SQLiteStorage`` is composed of one mixin per domain, all built on ``SQLiteBase``
(connections, migrations, transactions: ``_base.py``), and declares that it
implements ``storage.Storage``, so mypy checks every verb's signature against it.
"""

from __future__ import annotations

from ..base import Storage
from ._base import Q, SQLiteBase, _statements, path_from_url, wrap_exceptions
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

__all__ = ["Q", "SQLiteBase", "SQLiteStorage", "_statements", "path_from_url", "wrap_exceptions"]


class SQLiteStorage(
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
    """``Storage`` on a SQLite file. Create with ``await SQLiteStorage.open(path)``."""
