"""The change log read as an API, on both backends: events by id, pruning and its
horizon, wake-ups when events are committed (by this process, by a second storage on
the same database, by another process), and the articles changed since a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from test_storage_contract import T0, draft
from test_storage_delivery import outcome, settle, subscribe

from storage import DeliveryNotFound, Storage, open_storage
from storage.records import DeliveryOutcome, Event

#: A write by anyone must wake a watcher within this (the long-poll's target).
WAKE_WITHIN = 0.1
MINUTE = timedelta(minutes=1)
ROOT = Path(__file__).resolve().parent.parent


async def log_of(store: Storage, count: int, *, start: int = 0) -> list[Event]:
    """``count`` new articles, one a minute from T0 + ``start`` minutes; their events."""
    for n in range(start, start + count):
        await store.put_article(draft(f"a{n}"), now=T0 + n * MINUTE)
    return (await store.list_events(limit=10_000, with_data=False))[-count:]


async def seqs(store: Storage) -> list[int]:
    return [e.seq for e in await store.list_events(limit=10_000, with_data=False)]


# -- events by id ----------------------------------------------------------------


async def test_find_event_by_its_id(store: Storage) -> None:
    first, second = await log_of(store, 2)
    found = await store.find_event(second.id)
    assert found == second  # the head: no data snapshot
    assert found is not None and found.data == {} and found.type == "article.published"
    assert await store.find_event(first.id) == first
    assert await store.find_event("msg_0000000000007000800000000000000a") is None
    assert await store.find_event("") is None


# -- pruning -------------------------------------------------------------------


async def test_prune_deletes_the_oldest_and_moves_the_horizon(store: Storage) -> None:
    assert await store.prune_events(before=T0 + 99 * MINUTE) == 0  # an empty log
    assert await store.event_horizon() == 0
    events = await log_of(store, 6)
    head = await store.feed_state(None)

    assert await store.prune_events(before=T0 + 3 * MINUTE) == 3  # made at T0, +1, +2
    assert await seqs(store) == [e.seq for e in events[3:]]
    assert await store.event_horizon() == events[2].seq
    assert await store.find_event(events[2].id) is None
    assert await store.find_event(events[3].id) is not None

    assert await store.prune_events(before=T0 + 3 * MINUTE) == 0
    assert await store.event_horizon() == events[2].seq  # never back

    assert await store.prune_events(before=T0 + 99 * MINUTE, limit=1) == 1
    assert await store.event_horizon() == events[3].seq
    # Everything is older than `before` now, but the newest event stays: it is the head.
    assert await store.prune_events(before=T0 + 99 * MINUTE) == 1
    assert await seqs(store) == [events[5].seq]
    assert await store.event_horizon() == events[4].seq
    assert await store.feed_state(None) == head
    assert await store.prune_events(before=T0 + 99 * MINUTE) == 0

    # The next event follows the head, as it would have.
    (after,) = await log_of(store, 1, start=6)
    assert after.seq > events[5].seq


async def test_prune_is_contiguous_in_time(store: Storage) -> None:
    """An event newer than ``before`` stops pruning, older ones after it included."""
    old, new = await log_of(store, 1), await log_of(store, 1, start=50)
    older = await log_of(store, 2, start=1)  # written later, stamped earlier
    assert await store.prune_events(before=T0 + 10 * MINUTE) == 1
    assert await seqs(store) == [e.seq for e in new + older]
    assert await store.event_horizon() == old[0].seq


async def test_prune_stops_at_the_first_event_not_yet_fanned_out(store: Storage) -> None:
    events = await log_of(store, 6)
    await store.fan_out([], cursor="deliveries", up_to=events[3].seq)
    await store.fan_out([], cursor="deliveries:websub", up_to=events[1].seq)
    assert await store.prune_events(before=T0 + 99 * MINUTE) == 2  # up to the lower cursor
    await store.fan_out([], cursor="deliveries:websub", up_to=events[5].seq)
    assert await store.prune_events(before=T0 + 99 * MINUTE) == 2
    assert await store.event_horizon() == events[3].seq


async def test_prune_keeps_events_with_deliveries_not_yet_ended(store: Storage) -> None:
    await subscribe(store, "s1")
    events = await log_of(store, 5)
    pairs = [(e.seq, "s1") for e in events[1:4]]
    await store.fan_out(pairs, cursor="deliveries", up_to=events[-1].seq, now=T0)
    pending = {d.event_seq: d for d in await store.list_deliveries("s1")}
    first, second, third = (pending[e.seq] for e in events[1:4])

    # events[1]'s delivery is pending: only events[0] may go.
    assert await store.prune_events(before=T0 + 99 * MINUTE) == 1

    def ended(delivery_id: int, status: str) -> list[DeliveryOutcome]:
        return [outcome(delivery_id, "s1", status, status_code=200)]

    await settle(store, ended(first.id, "delivered"), now=T0)
    await settle(
        store,
        [outcome(second.id, "s1", "failed", status_code=500, next_attempt_at=T0 + MINUTE)],
        now=T0,
    )
    assert await store.prune_events(before=T0 + 99 * MINUTE) == 1  # a failed one waits too
    with pytest.raises(DeliveryNotFound):
        await store.get_delivery(first.id)  # pruned with its event
    assert (await store.get_delivery(second.id)).status == "failed"

    await settle(store, [outcome(second.id, "s1", "dead", status_code=500)], now=T0)
    await settle(store, ended(third.id, "delivered"), now=T0)
    assert await store.prune_events(before=T0 + 99 * MINUTE) == 2  # the last one stays
    assert await store.list_deliveries("s1") == []
    assert await seqs(store) == [events[4].seq]
    assert await store.event_horizon() == events[3].seq


# -- articles changed since ----------------------------------------------------


async def test_list_changed_articles_order_cursor_tombstones_and_schedule(
    store: Storage,
) -> None:
    await store.put_article(draft("a"), now=T0)
    await store.put_article(draft("c"), now=T0 + MINUTE)
    await store.put_article(draft("b"), now=T0 + MINUTE)
    scheduled = draft("d", published_at=T0 + timedelta(days=1))
    await store.put_article(scheduled, now=T0 + 2 * MINUTE)
    await store.delete_article("a", now=T0 + 3 * MINUTE)

    async def ids(**kwargs: object) -> list[str]:
        listed = await store.list_changed_articles(**kwargs)  # type: ignore[arg-type]
        return [a.id for a in listed]

    # Oldest change first by (updated_at, id); the tombstone at its deletion time.
    assert await ids(since=T0) == ["b", "c", "a"]
    assert await ids(since=T0 + 2 * MINUTE) == ["a"]
    assert await ids(since=T0 + 4 * MINUTE) == []
    assert await ids(since=T0, limit=2) == ["b", "c"]
    b = await store.get_article("b")
    assert await ids(since=T0, after=(b.updated_at, b.id)) == ["c", "a"]
    assert await ids(since=T0 + 3 * MINUTE, after=(b.updated_at, b.id)) == ["a"]
    (tombstone,) = await store.list_changed_articles(since=T0 + 2 * MINUTE)
    assert tombstone.deleted_at == T0 + 3 * MINUTE and tombstone.updated_at == T0 + 3 * MINUTE

    published = await store.publish_due(now=T0 + timedelta(days=1))
    assert [a.id for a in published] == ["d"]
    assert await ids(since=T0 + 2 * MINUTE) == ["a", "d"]


# -- wake-ups ------------------------------------------------------------------


class Watcher:
    """A watch_events consumer as the pull API is one: woken, it reads the head."""

    def __init__(self, store: Storage) -> None:
        self.store = store
        self.calls = 0
        self._woken = asyncio.Event()
        self.stop = store.watch_events(self._wake)

    def _wake(self) -> None:
        self.calls += 1
        self._woken.set()

    async def head_reaches(self, seq: int, *, within: float = 5.0) -> float:
        """Wait, woken only by the watch, until the head is at ``seq``; returns when
        (time.time()) it saw it."""
        async with asyncio.timeout(within):
            while (await self.store.feed_state(None)).seq < seq:
                await self._woken.wait()
                self._woken.clear()
        return time.time()

    async def woken(self, *, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            await self._woken.wait()
        self._woken.clear()


async def listening(store: Storage, writer: Storage | None = None) -> Watcher:
    """A watcher known to be hearing: one write through ``writer`` (else ``store``) woke it."""
    watcher = Watcher(store)
    await (writer or store).put_article(draft("warm-up"), now=T0)
    await watcher.head_reaches((await (writer or store).feed_state(None)).seq)
    return watcher


async def test_watch_wakes_at_once_for_this_process_writes(store: Storage) -> None:
    watcher = await listening(store)
    writes: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("put", lambda: store.put_article(draft("x"), now=T0)),
        ("batch", lambda: store.put_articles([draft("y"), draft("z")], now=T0)),
        ("delete", lambda: store.delete_article("x", now=T0 + MINUTE)),
        ("publish_due", lambda: store.publish_due(now=T0 + MINUTE)),
    ]
    # Scheduled: no event until publish_due announces it.
    await store.put_article(draft("s", published_at=T0 + MINUTE), now=T0)
    for name, write in writes:
        before = (await store.feed_state(None)).seq
        await write()
        written = time.time()
        head = (await store.feed_state(None)).seq
        assert head > before, name
        assert await watcher.head_reaches(head) - written < WAKE_WITHIN, name
    watcher.stop()


@pytest.mark.parametrize(
    ("backend", "fast_paths"), [("sqlite", True), ("sqlite", False), ("postgres", True)]
)
async def test_watch_hears_a_second_storage_on_the_same_database(
    database_url: str, fast_paths: bool
) -> None:
    """A second storage is another process as far as the first can tell: its writes
    come through the database (SQLite: the WAL header, or PRAGMA data_version without
    the fast path; PostgreSQL: NOTIFY)."""
    reader = await open_storage(database_url, fast_paths=fast_paths)
    writer = await open_storage(database_url, fast_paths=fast_paths)
    try:
        watcher = await listening(reader, writer)
        for n in range(5):
            await writer.put_article(draft(f"x{n}"), now=T0)
            written = time.time()
            head = (await writer.feed_state(None)).seq
            assert await watcher.head_reaches(head) - written < WAKE_WITHIN
        watcher.stop()
    finally:
        await writer.close()
        await reader.close()


CHILD_WRITE = """
import asyncio, sys, time
from storage import open_storage
from test_storage_contract import draft, T0

async def main():
    store = await open_storage(sys.argv[1])
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()
    await store.put_article(draft("child"), now=T0)
    committed = time.time()
    head = (await store.feed_state(None)).seq
    await store.close()
    print(head, committed, flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_watch_hears_another_process(database_url: str) -> None:
    """A real child process writes (SQLite: it publishes through shared memory)."""
    store = await open_storage(database_url)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD_WRITE,
        database_url,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PATH": ""},
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        async with asyncio.timeout(20):
            assert await child.stdout.readline() == b"ready\n"
        watcher = Watcher(store)
        await asyncio.sleep(0)  # the watch's first look at the database
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        head, committed = (await child.stdout.readline()).split()
        seen = await watcher.head_reaches(int(head))
        # The child's line may come after the wake-up: time from its commit.
        assert seen - float(committed) < WAKE_WITHIN
        watcher.stop()
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        await store.close()


async def test_unwatch_stops_calls_and_the_last_one_stops_listening(
    database_url: str, backend: str
) -> None:
    store = await open_storage(database_url)
    try:
        tasks = len(asyncio.all_tasks())
        gone, kept = Watcher(store), await listening(store)
        gone.stop()
        gone.stop()  # idempotent
        calls = gone.calls
        await store.put_article(draft("after"), now=T0)
        await kept.head_reaches((await store.feed_state(None)).seq)
        assert gone.calls == calls
        if backend == "postgres":
            assert await listeners(database_url, 1) == 1
        kept.stop()
        assert await tasks_back_to(tasks)
        if backend == "postgres":
            assert await listeners(database_url, 0) == 0
        # Watching again starts again.
        again = await listening(store)
        again.stop()
    finally:
        await store.close()


async def tasks_back_to(count: int) -> bool:
    """Whether the running tasks come back to ``count`` (a stopped watch's task ends
    once its connection is closed: a round trip)."""
    async with asyncio.timeout(5):
        while len(asyncio.all_tasks()) > count:
            await asyncio.sleep(0.005)
    return True


async def listeners(dsn: str, expected: int) -> int:
    """Connections LISTENing for events on the database (by their last statement),
    waited for (5 s at most) to come to ``expected``: a connection closing or
    killed lingers a moment after its client has let go."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 5
        while True:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN %syndicate_events%'"
            )
            if count == expected or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def test_a_failing_watcher_is_logged_and_the_others_still_called(
    store: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("watcher bug")

    store.watch_events(broken)
    watcher = await listening(store)
    with caplog.at_level(logging.ERROR, logger="storage.events"):
        result = await store.put_article(draft("x"), now=T0)
        await watcher.head_reaches((await store.feed_state(None)).seq)
    assert result.outcome == "created"
    assert any("watcher failed" in r.message for r in caplog.records)


async def test_close_with_watchers_open(database_url: str) -> None:
    store = await open_storage(database_url)
    tasks = len(asyncio.all_tasks())
    watcher = await listening(store)
    Watcher(store)
    async with asyncio.timeout(5):
        await store.close()
    assert len(asyncio.all_tasks()) <= tasks
    calls = watcher.calls
    watcher.stop()  # after close: harmless
    assert watcher.calls == calls


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_lost_listen_connection_is_polled_over_then_replaced(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("storage.postgres._event_watch.RETRY_SECONDS", 0.3)
    monkeypatch.setattr("storage.postgres._event_watch.FALLBACK_INTERVAL", 0.05)
    reader, writer = await open_storage(database_url), await open_storage(database_url)
    admin = await asyncpg.connect(database_url)
    try:
        watcher = await listening(reader, writer)
        with caplog.at_level(logging.WARNING, logger="storage.events"):
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN %syndicate_events%'"
            )
            assert await listeners(database_url, 0) == 0
            # Down: watchers are woken by polling, and read the head themselves.
            await writer.put_article(draft("while-down"), now=T0)
            await watcher.head_reaches((await writer.feed_state(None)).seq, within=2)
        assert any("LISTEN connection was lost" in r.message for r in caplog.records)
        # Back: a new LISTEN connection, and wake-ups within the bound again.
        assert await listeners(database_url, 1) == 1
        await writer.put_article(draft("back"), now=T0)
        written = time.time()
        assert await watcher.head_reaches((await writer.feed_state(None)).seq) - written < 0.5
        watcher.stop()
    finally:
        await admin.close()
        await writer.close()
        await reader.close()
