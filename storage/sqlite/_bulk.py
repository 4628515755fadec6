"""Many rows in few SQLite steps, for code running on aiosqlite's writer thread.

Python's ``sqlite3`` releases the GIL around every ``sqlite3_step``, so
``executemany`` of 500 rows (or reading 200 rows) gives the GIL away and takes
it back 500 times. While the event loop's thread computes (drafting the next
batch, sending webhooks), each take-back waits up to the interpreter's switch
interval (5 ms): measured here, an ``executemany`` of 500 article rows went from
22 µs to over 3 ms per row beside one busy thread. A multi-row ``INSERT``
runs all its rows in one step, so the GIL is taken back once per statement and the
database work overlaps the loop's.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

from ..jsoncodec import loads_stored

T = TypeVar("T")

#: SQLite's own default limit on ``?`` per statement (since 3.32); builds may allow more.
MAX_VARIABLES = 32_766
#: Most rows in one statement. Statements are made in power-of-two sizes only, so a
#: few prepared statements per query serve every count (sqlite3 caches them by text).
MAX_ROWS = 512

_VALUES = re.compile(r"\bVALUES\s*(\([^()]*\))", re.IGNORECASE)


@functools.lru_cache(maxsize=128)
def rows_sql(sql: str, rows: int) -> str:
    """``sql`` (one ``INSERT … VALUES (…)``) with its value tuple repeated ``rows`` times."""
    match = _VALUES.search(sql)
    if match is None or ":" in match.group(1):
        raise ValueError("rows_sql needs an INSERT with one VALUES (?, …) tuple")
    group = match.group(1)
    return sql[: match.start(1)] + ", ".join([group] * rows) + sql[match.end(1) :]


def insert_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``conn.executemany(sql, rows)``, in the same order, as multi-row statements.

    Rows are written in order, so with ``ON CONFLICT … DO UPDATE`` a later row with
    the same key updates the earlier one exactly as ``executemany`` would.
    """
    if not rows:
        return
    most = max(1, min(MAX_ROWS, MAX_VARIABLES // len(rows[0])))
    start = 0
    while start < len(rows):
        count = 1 << (min(len(rows) - start, most).bit_length() - 1)
        chunk = rows[start : start + count]
        conn.execute(rows_sql(sql, count), [value for row in chunk for value in row])
        start += count


_json_selects: dict[str, str] = {}


def fetch_all(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
) -> list[dict[str, Any]]:
    """Every row of the query ``sql`` as a dict by column name, in its order, in one
    step: SQLite folds the rows into one JSON text, which orjson reads in C.

    For columns of text, integers, reals (to 15 significant digits) and NULL: JSON
    cannot carry a BLOB (SQLite raises an error rather than lose one).
    """
    wrapped = _json_selects.get(sql)
    if wrapped is None:
        probe = conn.execute(f"SELECT * FROM ({sql}) WHERE 0", params)
        names = [column[0] for column in probe.description]
        pairs = ", ".join(f"{_literal(n)}, {_quote(n)}" for n in names)
        wrapped = f"SELECT json_group_array(json_object({pairs})) FROM ({sql})"
        _json_selects[sql] = wrapped
    (text,) = conn.execute(wrapped, params).fetchone()
    rows: list[dict[str, Any]] = loads_stored(text)
    return rows


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def distinct_rounds(items: Sequence[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """``items`` in rounds where each key occurs once: the n-th item with a key goes
    to round n. Set-based statements that take one row per key, run round after
    round, then write what ``executemany`` of ``items`` in order would have."""
    rounds: list[list[T]] = []
    seen: dict[Hashable, int] = {}
    for item in items:
        k = key(item)
        n = seen[k] = seen.get(k, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(item)
    return rounds
