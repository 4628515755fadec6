"""Named SQL blocks and numbered migrations, read from package files once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def load_queries(dialect: str) -> dict[str, str]:
    """Parse ``sql/<dialect>.sql`` into ``{name: statement}``.

    Each block starts with a ``-- name: <name>`` line and runs to the next one.

    Names are shared by the dialects, one per verb (tests/test_storage_queries.py
    holds them to it): a verb is one statement in one dialect and may be several
    steps in the other, named ``<verb>.<step>`` (SQLite has no data-modifying
    CTEs, so what PostgreSQL's ``write_articles`` does in one statement takes
    SQLite nine). A name with a dialect prefix (``sqlite_``, ``pg_``) is that
    backend's own infrastructure (a PRAGMA, an advisory lock, a NOTIFY).
    """
    text = resources.files("storage").joinpath("sql", f"{dialect}.sql").read_text("utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in {dialect}.sql")
        queries[name] = body.strip().rstrip(";")
    return queries


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """The numbered ``migrations/<dialect>/NNNN_name.sql`` files, in order."""
    folder = resources.files("storage").joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two {dialect} migrations share a number: {versions}")
    return found


def like_contains(text: str) -> str:
    """``text`` as a LIKE pattern's middle part with ``ESCAPE '\\'``: its own ``%``,
    ``_`` and ``\\`` match themselves (a search for "50%" is not "50 and anything")."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
