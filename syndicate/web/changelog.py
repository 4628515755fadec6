"""The change log read by partners: one ``ChangeLog`` per process serves every puller
(``GET /api/events``) and stream (``GET /api/events/stream``).

An item is the webhook body of an event (``delivery.webhooks.event_body``) with its
``id`` first: the same bytes a push carries, rendered once per process. The newest
items are kept in a window bounded by count and bytes, so that a thousand streams
woken by one event cost one query and one render; older ranges are read from
storage (with a small cache of rendered bodies, for pullers paging the same range).

Waking: the storage's ``watch_events`` calls back when events may have been
committed (this process's writes at once, other processes' within milliseconds);
the log then reads the head once and, if it moved, wakes every waiter. The watch is
started by the first waiter, so a process nobody pulls from or streams from does not
watch at all.

Positions are event seqs. A client holds them as opaque cursors (``cursor_for``) or
as event ids (``msg_...``, the ``webhook-id`` of a push); ``resolve_after`` turns
either into a seq, or into the problem that says why it cannot.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from aiohttp import web

from storage import Storage
from storage.records import Event
from syndicate.delivery.webhooks import event_body

logger = logging.getLogger(__name__)

#: Items kept rendered in the window of recent events, at most (count and bytes):
#: a partner paging through the last day or so reads memory, not the database.
WINDOW_ITEMS = 50_000
WINDOW_BYTES = 64 * 1024 * 1024
#: Events read into the window at once (a backlog comes in several reads).
EXTEND_CHUNK = 5_000
#: Rendered bodies of older events kept for pullers paging the same range.
OLDER_CACHE_ITEMS = 2_000
#: Event heads a filtered read looks at, at most, before it answers (moving the
#: cursor past what did not match).
SCAN_LIMIT = 10_000
#: A page's bodies, at most (a page holds at least one item, however big): with
#: articles up to the body limit, 1,000 items could be a gigabyte.
PAGE_BYTES = 4 * 1024 * 1024
#: Events read from storage first, before their sizes say how many more fit.
FIRST_READ = 50
#: Reads of events without a stored body count this many bytes each.
_UNSTORED_SIZE = 4096
#: A waiter looks at the head this often even without a wake-up, seconds.
SAFETY_POLL = 1.0
#: Heads read from storage at once while scanning.
_SCAN_CHUNK = 1_000


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader wants; None: every topic / every type."""

    topics: frozenset[str] | None = None
    types: frozenset[str] | None = None

    def matches(self, event: Event) -> bool:
        if self.types is not None and event.type not in self.types:
            return False
        return self.topics is None or not self.topics.isdisjoint(event.topics)


EVERYTHING = EventFilter()


class Item(NamedTuple):
    """One event as partners read it: ``body`` is one line of JSON, the webhook body
    with ``"id"`` first. A named tuple: made for every event a page reads, and a
    quarter of the cost of a frozen dataclass."""

    seq: int
    id: str
    body: bytes
    topics: tuple[str, ...] = ()
    type: str = ""

    def matches(self, flt: EventFilter) -> bool:
        if flt.types is not None and self.type not in flt.types:
            return False
        return flt.topics is None or not flt.topics.isdisjoint(self.topics)


@dataclass(frozen=True)
class Page:
    """Items read, the position read up to (``last_seq``, matched or not: the next
    ``after``), and whether more events may already be there (read again at once)."""

    items: list[Item]
    last_seq: int
    more: bool


def render(event: Event, base_url: str) -> Item:
    """The event's item: its stored body with the id spliced in (no parse), else its
    snapshot rendered."""
    body = b'{"id":"' + event.id.encode() + b'",' + event_body(event, base_url)[1:]
    return Item(event.seq, event.id, body, event.topics, event.type)


class ChangeLog:
    """One per process (app key ``CHANGE_LOG``): reads the log for every puller and
    stream."""

    def __init__(
        self,
        storage: Storage,
        base_url: str,
        *,
        window_items: int = WINDOW_ITEMS,
        window_bytes: int = WINDOW_BYTES,
        scan_limit: int = SCAN_LIMIT,
    ) -> None:
        self.storage = storage
        self.base_url = base_url
        self.window_items = window_items
        self.window_bytes = window_bytes
        self.scan_limit = scan_limit
        self._closing = False
        self._head = 0
        # The window: every event with floor < seq <= tail, rendered, in order.
        self._window: list[Item] = []
        self._seqs: list[int] = []
        self._window_size = 0
        self._floor = 0
        self._tail = 0
        self._extending = asyncio.Lock()
        self._older: OrderedDict[int, Item] = OrderedDict()
        # Watching: the head is known (no query) only while watched and not stale.
        self._unwatch: Callable[[], None] | None = None
        self._stale = True
        self._moved = asyncio.Event()
        self._refreshing: asyncio.Task[None] | None = None
        self._waiters = 0

    @property
    def closing(self) -> bool:
        return self._closing

    async def start(self) -> None:
        self._head = self._floor = self._tail = await self._read_head()

    async def stop(self) -> None:
        """Wake every waiter (they answer at once) and stop watching. Idempotent."""
        self._closing = True
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self._moved.set()
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
            self._refreshing = None

    async def head(self, *, fresh: bool = False) -> int:
        """The latest seq (no query while watched and nothing new was signalled;
        ``fresh``: read from the database whatever this process knows)."""
        if self._unwatch is None or fresh:
            # Unwatched, nothing signals a commit: read it (never a read begun earlier,
            # which could miss a write the caller saw committed).
            await self._refresh_now()
        elif self._stale:
            await self._refresh_shared()
        return self._head

    async def wait(self, after: int, timeout: float) -> bool:
        """True as soon as the head is past ``after``; False at ``timeout`` or stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._watch()
        self._waiters += 1
        try:
            while True:
                if self._closing:
                    return False
                if self._stale:
                    await self._refresh_shared()
                if self._head > after:
                    return True
                if self._closing:
                    return False
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                moved = self._moved
                try:
                    async with asyncio.timeout(min(remaining, SAFETY_POLL)):
                        await moved.wait()
                except TimeoutError:
                    # A wake-up lost (a dropped LISTEN connection): look anyway.
                    self._stale = True
        finally:
            self._waiters -= 1

    async def read(self, after: int, flt: EventFilter, limit: int) -> Page:
        """Up to ``limit`` items after ``after`` that ``flt`` matches, looking at no
        more than ``scan_limit`` events."""
        head = await self.head()
        if after >= head:
            return Page([], after, False)
        if after >= self._floor:
            ahead = len(self._seqs) - bisect.bisect_right(self._seqs, after)
            if self._tail < head and ahead < limit:
                await self._extend(head)
            if after >= self._floor:
                return self._from_window(after, flt, limit, head)
        return await self._from_storage(after, flt, limit, head)

    # -- reading ---------------------------------------------------------------------

    def _from_window(self, after: int, flt: EventFilter, limit: int, head: int) -> Page:
        start = bisect.bisect_right(self._seqs, after)
        items: list[Item] = []
        size = 0
        last = after
        window = self._window
        end = min(len(window), start + self.scan_limit)
        index = start
        while index < end:
            item = window[index]
            index += 1
            last = item.seq
            if item.matches(flt):
                items.append(item)
                size += len(item.body)
                if len(items) >= limit or size >= PAGE_BYTES:
                    break
        if index >= len(window):
            # Every event up to the tail is in the window: the position is the tail.
            last = max(last, self._tail)
        return Page(items, last, last < head)

    async def _from_storage(self, after: int, flt: EventFilter, limit: int, head: int) -> Page:
        if flt == EVERYTHING:
            items, cut = await self._read_items(after, limit, PAGE_BYTES)
            last = items[-1].seq if items else after
            if not cut and len(items) < limit:
                last = max(last, head)
            return Page(items, last, last < head)
        picked: list[Event] = []
        last = after
        scanned = 0
        while len(picked) < limit and scanned < self.scan_limit:
            chunk = min(_SCAN_CHUNK, self.scan_limit - scanned)
            heads = await self.storage.list_events(after=last, limit=chunk, with_data=False)
            for event in heads:
                last = event.seq
                scanned += 1
                if flt.matches(event):
                    picked.append(event)
                    if len(picked) >= limit:
                        break
            if len(heads) < chunk:
                if len(picked) < limit:
                    last = max(last, head)
                break
        items = await self._bodies(picked)
        if len(items) < len(picked):  # cut at PAGE_BYTES: read on from the last one
            last = items[-1].seq
        return Page(items, last, last < head)

    async def _bodies(self, events: list[Event]) -> list[Item]:
        """The items of ``events``, in reads of ``FIRST_READ``, up to ``PAGE_BYTES``
        (at least one)."""
        items: list[Item] = []
        size = 0
        for start in range(0, len(events), FIRST_READ):
            group = events[start : start + FIRST_READ]
            missing = [e.seq for e in group if e.seq not in self._older]
            full = await self.storage.get_events(missing) if missing else {}
            for event in group:
                item = self._older.get(event.seq)
                if item is None:
                    item = self._rendered(full[event.seq])
                else:
                    self._older.move_to_end(event.seq)
                items.append(item)
                size += len(item.body)
                if size >= PAGE_BYTES:
                    return items
        return items

    async def _read_items(self, after: int, limit: int, budget: int) -> tuple[list[Item], bool]:
        """Up to ``limit`` items after ``after``, read ``FIRST_READ`` first and then as
        many as their sizes say fit, stopping once ``budget`` bytes are read (at least
        one item); True when the budget cut it short. Stored bodies become items with
        no parse and no render (``list_event_items``); events without one are read
        whole and rendered."""
        items: list[Item] = []
        size = 0
        chunk = min(limit, FIRST_READ)
        while chunk > 0:
            rows = await self.storage.list_event_items(after=after, limit=chunk)
            unstored = [seq for seq, _, _, _, body in rows if body is None]
            full = await self.storage.get_events(unstored) if unstored else {}
            for seq, event_id, event_type, topics, body in rows:
                if body is None:
                    item = self._rendered(full[seq])
                else:
                    spliced = b'{"id":"' + event_id.encode() + b'",' + body[1:]
                    item = Item(seq, event_id, spliced, topics, event_type)
                items.append(item)
                size += len(item.body)
                if size >= budget:
                    return items, len(items) < limit or seq != rows[-1][0]
            if len(rows) < chunk:
                break
            after = items[-1].seq
            fits = int((budget - size) / (size / len(items))) + 1
            chunk = min(limit - len(items), fits)
        return items, False

    def _rendered(self, event: Event) -> Item:
        if event.body is not None:
            # Made from the stored body in a microsecond: not worth a cache slot.
            return render(event, self.base_url)
        item = self._older.get(event.seq)
        if item is not None:
            self._older.move_to_end(event.seq)
            return item
        item = render(event, self.base_url)
        self._older[event.seq] = item
        if len(self._older) > OLDER_CACHE_ITEMS:
            self._older.popitem(last=False)
        return item

    async def _extend(self, head: int) -> None:
        """Read and render the events after the window's tail (once, for every reader
        waiting on the lock), up to ``window_items`` of them."""
        async with self._extending:
            if self._tail >= head:
                return
            chunk = min(self.window_items, EXTEND_CHUNK)
            items, cut = await self._read_items(self._tail, chunk, self.window_bytes // 4)
            for item in items:
                self._older.pop(item.seq, None)
                self._window.append(item)
                self._seqs.append(item.seq)
                self._window_size += len(item.body)
            if items:
                self._tail = items[-1].seq
            if not cut and len(items) < chunk:
                self._tail = max(self._tail, head)
            drop = 0
            excess = len(self._window) - self.window_items
            while drop < len(self._window) and (
                drop < excess or self._window_size > self.window_bytes
            ):
                self._window_size -= len(self._window[drop].body)
                drop += 1
            if drop:
                self._floor = self._seqs[drop - 1]
                del self._window[:drop], self._seqs[:drop]
            if not self._window:
                self._floor = self._tail

    # -- watching --------------------------------------------------------------------

    def _watch(self) -> None:
        if self._unwatch is None and not self._closing:
            self._unwatch = self.storage.watch_events(self._on_wake)
            self._stale = True

    def _on_wake(self) -> None:
        self._stale = True
        if self._waiters and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._refresh(), name="syndicate-changelog")

    async def _refresh_shared(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh(), name="syndicate-changelog")
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        try:
            while self._stale and not self._closing:
                await self._refresh_now()
        except Exception:
            logger.exception("reading the change log's head failed")
            self._stale = True

    async def _refresh_now(self) -> None:
        self._stale = False
        head = await self._read_head()
        if head > self._head:
            self._head = head
            moved, self._moved = self._moved, asyncio.Event()
            moved.set()

    async def _read_head(self) -> int:
        state = self.storage.cached_feed_state(None)
        if state is None:
            state = await self.storage.feed_state(None)
        return state.seq


CHANGE_LOG = web.AppKey("change_log", ChangeLog)
