"""WAL checkpoints on a connection and thread of their own, not in the writer's commit.

SQLite's automatic checkpoint (``wal_autocheckpoint``, 1,000 pages) runs inside
the COMMIT that crosses the threshold, on the committing connection: it copies
the WAL's pages into the database file and, with ``synchronous = NORMAL``, waits
for two ``fsync`` calls. Here that was the writer's thread: measured, a
500-article batch's COMMIT took 12 ms with it and 3 ms without, and every write
queued in this process waited behind it.

So the writer connection turns the automatic checkpoint off and, after each of
its commits, looks at the WAL's length in the WAL-index header (``_wal_watch``, a
memory read). Past ``CHECKPOINT_FRAMES`` it asks this checkpointer for a PASSIVE
checkpoint, which runs on its own aiosqlite connection while writers go on
(PASSIVE never takes the write lock nor waits for readers). Requests that come
while one runs make one more run after it, not one each.

The WAL starts over from its beginning only when a write begins after a
checkpoint has copied all of it, and under writes that never pause a PASSIVE
checkpoint never quite catches up (SQLite's automatic one does no better: it too
runs after the write lock is released). So past ``RESTART_FRAMES`` the background
checkpoint is a RESTART: it waits for the write lock, copies the little that the
PASSIVE ones left, and the next write starts the WAL over. Should the background
checkpoints fail, the writer checkpoints in its own thread after its commit once
the WAL passes ``INLINE_CHECKPOINT_FRAMES``, as the automatic checkpoint would.

Without a WAL-index mapping (``WalWatch.open`` returned None) none of this is
used: the writer keeps SQLite's automatic checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable

import aiosqlite

from ._wal_watch import WalWatch

logger = logging.getLogger("storage._sqlite_checkpoint")  # the name logs have always had

CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"
RESTART = "PRAGMA wal_checkpoint(RESTART)"

#: WAL length (pages) that asks for a background checkpoint: SQLite's own default.
CHECKPOINT_FRAMES = 1_000
#: WAL length at which the background checkpoint is a RESTART (about 32 MB of 4 KiB
#: pages): it waits for the write lock, holds it while it copies what PASSIVE ones
#: left, and so the next write starts the WAL over.
RESTART_FRAMES = 8_000
#: WAL length at which the writer checkpoints itself: only when the background
#: checkpoints fail (about 128 MB of 4 KiB pages).
INLINE_CHECKPOINT_FRAMES = 32_000


class Checkpointer:
    def __init__(
        self,
        watch: WalWatch,
        connect: Callable[[], Awaitable[aiosqlite.Connection]],
        *,
        writer_lock: asyncio.Lock,
        frames: int = CHECKPOINT_FRAMES,
        restart_frames: int = RESTART_FRAMES,
        inline_frames: int = INLINE_CHECKPOINT_FRAMES,
    ) -> None:
        self._watch = watch
        self._connect = connect
        self._writer_lock = writer_lock
        self._frames = frames
        self._restart_frames = restart_frames
        self._inline_frames = inline_frames
        self._conn: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._closed = False
        #: The WAL length at which the next RESTART is tried: ``restart_frames``, and
        #: ``restart_frames`` further on after one that a reader kept from finishing
        #: (a RESTART after every commit would hold this process's writes off
        #: 250 ms each while that reader stays).
        self._next_restart = restart_frames
        #: Background checkpoints run.
        self.runs = 0

    def inline_due(self) -> bool:
        """Right after a writer's COMMIT, on a thread where the writer connection is
        open (the WAL index is mapped): should the writer checkpoint now, itself
        (``inline``), because the WAL has grown past the inline bound?"""
        if self._closed:
            return False
        frames = self._watch.frames()
        return frames is not None and frames >= self._inline_frames

    @staticmethod
    def inline(conn: sqlite3.Connection) -> None:
        """The writer's own checkpoint, after its COMMIT: the write is done, so a
        failure here is logged, never the write's.

        Run it as one function on the writer's thread, never as an aiosqlite
        ``execute`` whose cursor is left unread: the PRAGMA's statement would stay in
        progress (aiosqlite's thread keeps the last job's result, the cursor, until
        a later job succeeds), and the COMMIT of the next write done in one job
        (``_in_writer``) failed with "cannot commit transaction - SQL statements in
        progress", then the one after it, for as long as the WAL stayed past
        ``INLINE_CHECKPOINT_FRAMES``: every article write answered 503."""
        try:
            conn.execute(CHECKPOINT).fetchall()
        except sqlite3.Error as exc:
            logger.warning("WAL checkpoint failed", extra={"error": str(exc)})

    def after_commit(self) -> None:
        """On the event loop, after one of the writer's commits."""
        if self._closed:
            return
        frames = self._watch.frames()
        if frames is None or frames < self._frames:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                if self._conn is None:
                    self._conn = await self._connect()
                frames = self._watch.frames() or 0
                if frames >= self._next_restart:
                    # This process's writes wait meanwhile: between them the RESTART
                    # would seldom get the write lock in time.
                    async with self._writer_lock:
                        busy = await self._checkpoint(RESTART)
                    self._next_restart = self._restart_frames + (frames if busy else 0)
                else:
                    await self._checkpoint(CHECKPOINT)
                self.runs += 1
            except Exception as exc:  # a failed checkpoint never fails a write
                # The next commit past the threshold asks again; the writer's
                # inline checkpoint bounds the WAL meanwhile.
                logger.warning("WAL checkpoint failed", extra={"error": str(exc)})
                return
            if not self._again or self._closed:
                return

    async def _checkpoint(self, sql: str) -> bool:
        """Run ``sql``; whether it was kept from finishing (SQLite's ``busy``)."""
        conn = self._conn
        assert conn is not None

        async def run() -> bool:
            async with conn.execute(sql) as cur:
                row = await cur.fetchone()
            return bool(row is not None and row[0])

        # Shielded: a cancelled await would leave the checkpoint running on its thread.
        return await asyncio.shield(run())

    async def close(self) -> None:
        """Let a running checkpoint finish (it is a few milliseconds), then close."""
        self._closed = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
