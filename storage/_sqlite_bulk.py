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
from collections.abc import Sequence
from typing import Any

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
