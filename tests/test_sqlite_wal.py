"""SQLite's write-ahead log is checkpointed off the writer's thread: the database file
gets every commit, and the WAL stays bounded even under writes that never pause."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage import open_storage
from storage.records import ArticleDraft

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
CONTENT = "<p>" + "Liver calcification is usually harmless. " * 50 + "</p>"  # ~2 KB


def drafts(batch: int, count: int = 500) -> list[ArticleDraft]:
    return [
        ArticleDraft(
            id=f"b{batch}-{i}",
            guid=f"tag:example.org,2026:article/b{batch}-{i}",
            slug=f"b{batch}-{i}",
            title=f"Question {batch}-{i}",
            summary="Summary",
            content=CONTENT,
            content_type="html",
            topics=("liver-health",),
            published_at=T0 + timedelta(seconds=batch * count + i),
        )
        for i in range(count)
    ]


def articles_in_file_alone(db: Path, tmp_path: Path) -> int:
    """Count the articles in a copy of the database file without its WAL: what a
    file-level backup of the main file holds."""
    copy = tmp_path / "copy.sqlite"
    for leftover in (Path(f"{copy}-wal"), Path(f"{copy}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(db, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT count(*) FROM articles").fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # not even the schema was checkpointed yet
            return 0
        return -1  # copied while a checkpoint was writing the file: a torn copy
    except sqlite3.DatabaseError:
        return -1  # the same ("database disk image is malformed"): look again
    finally:
        conn.close()


async def file_reaches(db: Path, tmp_path: Path, count: int, timeout: float = 10.0) -> bool:
    """Whether the database file alone comes to hold ``count`` articles in time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while articles_in_file_alone(db, tmp_path) != count:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_commits_reach_the_database_file_and_the_wal_starts_over(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    wal = Path(f"{db}-wal")
    store = await open_storage(f"sqlite:///{db}")
    try:
        for batch in range(3):
            await store.put_articles(drafts(batch))  # each batch is over 1,000 WAL pages
            assert await file_reaches(db, tmp_path, 500 * (batch + 1)), (
                f"batch {batch}: the database file never got the commit"
            )
        # With a checkpoint between batches, each one's write started the WAL over:
        # it holds about one batch, not three.
        one_batch = wal.stat().st_size
        await store.put_article(drafts(9, 1)[0])
        assert wal.stat().st_size == one_batch, "a small write reuses the WAL from its start"
        conn = sqlite3.connect(db)
        try:
            busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()
        assert busy == 0 and frames < 100, f"the WAL holds {frames} pages after one small write"
    finally:
        await store.close()


async def test_the_wal_stays_bounded_under_writes_that_never_pause(tmp_path: Path) -> None:
    """Batch after batch with no pause: a PASSIVE checkpoint never catches up, so the
    WAL would grow by every batch; a RESTART checkpoint bounds it."""
    db = tmp_path / "db.sqlite"
    store = await open_storage(f"sqlite:///{db}")
    try:
        prepared = [drafts(batch) for batch in range(14)]  # ~15,000 WAL pages in all
        largest = 0
        for batch in prepared:
            await store.put_articles(batch)
            largest = max(largest, Path(f"{db}-wal").stat().st_size)
        page = 4096 + 24  # a WAL frame: one page and its header
        assert largest < 11_000 * page, f"the WAL reached {largest / page:.0f} pages"
        assert articles_in_file_alone(db, tmp_path) > 0
    finally:
        await store.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM articles").fetchone()[0] == 14 * 500
    finally:
        conn.close()
