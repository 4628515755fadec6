"""Has any connection, in any process, committed to this SQLite database since we
last looked? Answered by reading the WAL-index header that SQLite keeps in shared
memory, without a system call.

In WAL mode every commit publishes itself by rewriting the WAL-index header at the
start of ``<database>-shm`` (https://www.sqlite.org/walformat.html, "The WAL-Index
Header"): its change counter goes up, and the last valid frame moves or, when the
WAL restarts, the salts change. Readers start their snapshots from that header, so
while its bytes stay the same no reader anywhere can see anything new.
``PRAGMA data_version`` answers the same question, but takes a read transaction and
its file locks (system calls) to do it; on a feed revalidation that was a tenth of
the cost.

How it reads: SQLite maps the ``-shm`` file into every process using the database;
we find that mapping in ``/proc/self/maps`` and read the header's 48 bytes from it.
We never open the file ourselves: closing any descriptor of a file drops all of the
process's POSIX locks on it, SQLite's included (the first version of this opened and
closed the file, and a second process then reset the WAL index under our feet). The
mapping stays while any of this process's connections to the database is open, so
the storage reads only while its own connections are.

The header is written in two copies, the first one last, and SQLite's readers retry
(or recover the index) until the copies agree. We do the same: copies that differ
answer None, and the caller asks SQLite (``PRAGMA data_version``), which sorts it
out. That covers a writer killed between the two copies: its commit is in the WAL,
and the next SQLite reader anywhere recovers it. The format is stable (versions of
SQLite sharing one database must agree on it). Where there is no mapping (not Linux,
another locking mode, a VFS without shared memory, or two SQLite libraries in this
process) ``open`` returns None and the caller falls back
to ``PRAGMA data_version``.
"""

from __future__ import annotations

import ctypes
import os
import sys

HEADER_SIZE = 48  # one copy; the second follows it
_IS_INIT = 12  # byte offset of isInit in the header
_MX_FRAME = slice(16, 20)  # mxFrame: the last valid frame, native byte order


class WalWatch:
    def __init__(self, address: int) -> None:
        # A ctypes view of the header's bytes (reading ``.raw`` costs a tenth of
        # ``ctypes.string_at``).
        self._header = (ctypes.c_char * (2 * HEADER_SIZE)).from_address(address)

    @classmethod
    def open(cls, database_path: str) -> WalWatch | None:
        """A watch on ``database_path``'s WAL index, or None when this process has
        no mapping of it (call while a WAL-mode connection is open and has read)."""
        shm = os.path.realpath(database_path) + "-shm"
        found = []
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    fields = line.split(None, 5)
                    if len(fields) < 6 or fields[5].rstrip("\n") != shm:
                        continue
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    # the region holding the file's first bytes, shared and readable
                    if int(fields[2], 16) == 0 and fields[1][0] == "r" and fields[1][3] == "s":
                        found.append((start, end))
        except OSError:
            return None
        # Exactly one: two would mean two SQLite libraries in this process (say the
        # standard one and a bundled copy), and the other one's mapping may go away.
        if len(found) != 1 or found[0][1] - found[0][0] < 2 * HEADER_SIZE:
            return None
        return cls(found[0][0])

    def header(self) -> bytes | None:
        """The header's bytes (they change with every commit), or None while the
        WAL index is not initialised. Only while a connection of this process to
        the database is open."""
        both: bytes = self._header.raw
        header = both[:HEADER_SIZE]
        if not header[_IS_INIT] or header != both[HEADER_SIZE:]:
            return None
        return header

    def frames(self) -> int | None:
        """How many frames (pages) the WAL holds since it last started over, or None
        while the header cannot be read (see ``header``)."""
        header = self.header()
        if header is None:
            return None
        return int.from_bytes(header[_MX_FRAME], sys.byteorder)
