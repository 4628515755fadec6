"""Group commit for single article writes, shared by the backends.

Article writes serialise (one SQLite writer; one advisory lock on PostgreSQL), so
under concurrent POSTs most of a write's time is waiting. Writes that arrive while
one transaction is running are queued and written together in the next one: one
commit and one lock hold for many, each write still answered on its own (its own
result or its own error).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from .errors import StorageError, StorageUnavailable
from .records import ArticleDraft, PutResult

#: At most this many writes share one transaction.
MAX_GROUP = 256


@dataclass(frozen=True)
class PutRequest:
    draft: ArticleDraft
    create_only: bool
    now: datetime


#: Writes the requests in one transaction; a result or an exception per request,
#: in order. Raising fails every request of the group.
WriteGroup = Callable[[Sequence[PutRequest]], Awaitable[Sequence[PutResult | Exception]]]


class GroupCommit:
    def __init__(self, write: WriteGroup, *, limit: int = MAX_GROUP) -> None:
        self._write = write
        self._limit = limit
        self._queue: list[tuple[PutRequest, asyncio.Future[PutResult]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def put(self, request: PutRequest) -> PutResult:
        future: asyncio.Future[PutResult] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            group = self._queue[: self._limit]
            del self._queue[: self._limit]
            try:
                outcomes = await self._write_each_if_refused([request for request, _ in group])
            except BaseException as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if future.done():  # the caller gave up; the write stands
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _write_each_if_refused(
        self, requests: Sequence[PutRequest]
    ) -> Sequence[PutResult | Exception]:
        """The group in one transaction; if the database refuses it (not: is
        unreachable), each write alone, so that a bad one fails by itself."""
        try:
            return await self._write(requests)
        except StorageUnavailable:
            raise
        except StorageError:
            if len(requests) == 1:
                raise
        outcomes: list[PutResult | Exception] = []
        for request in requests:
            try:
                outcomes += await self._write([request])
            except StorageUnavailable:
                raise
            except StorageError as exc:
                outcomes.append(exc)
        return outcomes

    async def close(self) -> None:
        """Wait for queued writes to finish."""
        if self._drainer is not None:
            with contextlib.suppress(Exception):
                await self._drainer
