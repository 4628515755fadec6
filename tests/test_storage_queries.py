"""The two SQL dialects name the same verbs, and the backends ask for them by literal name.

A query name is ``<verb>`` or ``<verb>.<step>``: one dialect may do a verb in one
statement where the other needs several steps (SQLite has no data-modifying CTEs).
Every verb exists in both ``storage/sql/*.sql``; the only names in one dialect alone
are the backend's own infrastructure, listed here with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from storage._sql import load_queries

STORAGE = Path(__file__).resolve().parent.parent / "storage"

#: Names that exist in one dialect only, each for a reason the other backend lacks.
BACKEND_ONLY = {
    "sqlite": {
        # PRAGMA data_version: has another connection committed? (PostgreSQL's
        # feed state is always read from the server; there is nothing to poll.)
        "sqlite_data_version",
    },
    "postgres": {
        # pg_advisory_xact_lock: processes migrating together queue on it
        # (SQLite's BEGIN IMMEDIATE already takes the database's one write lock).
        "pg_advisory_xact_lock",
        # pg_notify: tells every process caching tokens that one was revoked
        # (SQLite reads tokens inline, uncached).
        "pg_notify_token_revoked",
        # pg_fan_out_memory: a fan-out step's sorts in memory (SQLite has no work_mem).
        "pg_fan_out_memory",
    },
}
PREFIX = {"sqlite": "sqlite_", "postgres": "pg_"}


def verb(name: str) -> str:
    return name.split(".", 1)[0]


def shared_verbs(dialect: str) -> set[str]:
    return {verb(name) for name in load_queries(dialect) if name not in BACKEND_ONLY[dialect]}


def test_every_verb_has_a_query_in_both_dialects() -> None:
    sqlite, postgres = shared_verbs("sqlite"), shared_verbs("postgres")
    assert sorted(sqlite - postgres) == [], "verbs with a SQLite query only"
    assert sorted(postgres - sqlite) == [], "verbs with a PostgreSQL query only"


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_backend_only_names_are_named_so_and_really_backend_only(dialect: str) -> None:
    other = "postgres" if dialect == "sqlite" else "sqlite"
    names = set(load_queries(dialect))
    assert BACKEND_ONLY[dialect] <= names
    assert not BACKEND_ONLY[dialect] & set(load_queries(other))
    prefixed = {n for n in names if n.startswith(tuple(PREFIX.values()))}
    assert prefixed == BACKEND_ONLY[dialect]
    assert all(n.startswith(PREFIX[dialect]) for n in BACKEND_ONLY[dialect])


def query_names_used(dialect: str) -> set[str]:
    """Every ``Q[...]`` in the backend's package; fails on a name that is not a literal."""
    used: set[str] = set()
    for path in sorted((STORAGE / dialect).glob("*.py")):
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        subscripted = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Q":
                key = node.slice
                where = f"{path.name}:{node.lineno}"
                assert isinstance(key, ast.Constant) and isinstance(key.value, str), (
                    f"{where}: a query is asked for by a name built at run time"
                )
                used.add(key.value)
                subscripted.add(id(node.value))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "Q" and isinstance(node.ctx, ast.Load):
                assert id(node) in subscripted, (
                    f"{path.name}:{node.lineno}: Q used but not as Q[...]"
                )
    return used


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_each_backend_asks_for_exactly_its_dialects_queries(dialect: str) -> None:
    used, defined = query_names_used(dialect), set(load_queries(dialect))
    assert sorted(used - defined) == [], "asked for but not in the SQL file"
    assert sorted(defined - used) == [], "in the SQL file but never used"
