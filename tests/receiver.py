"""A real partner endpoint on 127.0.0.1 for delivery tests: records every request and
answers as each test scripts it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviours: dict[str, Behaviour] = {}
        self._changed = asyncio.Condition()
        self.server: TestServer | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        entry = Received(request.path_qs, dict(request.headers), body, time.monotonic())
        async with self._changed:
            self.received.append(entry)
            self._changed.notify_all()
        behaviour = self.behaviours.get(request.path)
        if behaviour is not None:
            return await behaviour(request)
        return web.Response(status=204)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path.split("?")[0] == path]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(wait(), timeout)


def respond_with(*statuses: int, **headers: str) -> Behaviour:
    """Answer the n-th request with statuses[n] (the last one repeats)."""
    count = 0

    async def behaviour(request: web.Request) -> web.StreamResponse:
        nonlocal count
        status = statuses[min(count, len(statuses) - 1)]
        count += 1
        return web.Response(status=status, headers=headers, text=f"answer {status}")

    return behaviour


def hang(seconds: float) -> Behaviour:
    async def behaviour(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(status=204)

    return behaviour
