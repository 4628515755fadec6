"""Who wants to hear of new events, shared by the backends (``Storage.watch_events``).

An ``EventWatch`` holds the callbacks and calls them all on ``fire()``: after this
process's own commits of events, and from one background task, ``notice``, that
each backend gives for other processes' commits (SQLite: a look at the WAL header
every 20 ms; PostgreSQL: LISTEN). The task runs only while someone watches: started
with the first callback, cancelled when the last one leaves, awaited by ``close``.

A callback is called on the event loop, with no arguments, and may be called when
nothing new was committed (it reads the head itself). One that raises is logged and
the others are still called: a watcher's bug never reaches the storage's writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger("storage.events")

#: Runs until cancelled, calling ``fire`` whenever events may have been committed.
Notice = Callable[[Callable[[], None]], Coroutine[Any, Any, None]]


class EventWatch:
    def __init__(self, notice: Notice) -> None:
        self._notice = notice
        self._callbacks: dict[object, Callable[[], None]] = {}
        self._task: asyncio.Task[None] | None = None
        #: Tasks cancelled when their last watcher left, not yet finished.
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def watching(self) -> int:
        """How many callbacks are registered."""
        return len(self._callbacks)

    def add(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Register ``callback``; returns the function that removes it (idempotent).
        The same function added twice is two watches."""
        key = object()
        self._callbacks[key] = callback
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._notice(self.fire))

        def remove() -> None:
            self._callbacks.pop(key, None)
            if not self._callbacks and self._task is not None:
                task, self._task = self._task, None
                task.cancel()
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)

        return remove

    def fire(self) -> None:
        for callback in list(self._callbacks.values()):
            try:
                callback()
            except Exception:
                logger.exception("an event watcher failed")

    async def close(self) -> None:
        """Stop noticing; callbacks are not called any more. Idempotent."""
        self._closed = True
        self._callbacks.clear()
        tasks = list(self._stopping)
        if self._task is not None:
            tasks.append(self._task)
            self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception:
                    logger.exception("the event watch's task failed")
