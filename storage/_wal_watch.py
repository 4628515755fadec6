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
until the copies agree; we compare the first copy only, so a header in the middle of
being written reads as "changed" or as the state just before the commit, never as a
state no reader could see. The format is stable (versions of SQLite sharing one
database must agree on it). Where there is no mapping (not Linux, another locking
mode, a VFS without shared memory) ``open`` returns None and the caller falls back
to ``PRAGMA data_version``.
"""

from __future__ import annotations

import ctypes
import os

HEADER_SIZE = 48
_IS_INIT = 12  # byte offset of isInit in the header


class WalWatch:
    def __init__(self, address: int) -> None:
        # A ctypes view of the header's bytes (reading ``.raw`` costs a tenth of
        # ``ctypes.string_at``).
        self._header = (ctypes.c_char * HEADER_SIZE).from_address(address)

    @classmethod
    def open(cls, database_path: str) -> WalWatch | None:
        """A watch on ``database_path``'s WAL index, or None when this process has
        no mapping of it (call while a WAL-mode connection is open and has read)."""
        shm = os.path.realpath(database_path) + "-shm"
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    fields = line.split(None, 5)
                    if len(fields) < 6 or fields[5].rstrip("\n") != shm:
                        continue
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    # the region holding the file's first bytes, shared and readable
                    if int(fields[2], 16) == 0 and fields[1][0] == "r" and fields[1][3] == "s":
                        if end - start >= HEADER_SIZE:
                            return cls(start)
        except OSError:
            return None
        return None

    def header(self) -> bytes | None:
        """The header's bytes (they change with every commit), or None while the
        WAL index is not initialised. Only while a connection of this process to
        the database is open."""
        header: bytes = self._header.raw
        return header if header[_IS_INIT] else None
