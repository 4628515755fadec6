"""``GET /api/events/stream``: the change log as Server-Sent Events.

The items are ``GET /api/events``'s (``web.changelog`` reads and renders them), one
SSE event each: ``id:`` the event id (the ``webhook-id`` of its pushes), ``data:``
the webhook body with its ``id``; no ``event:`` field, so an EventSource's
``onmessage`` gets every one (the type is in the JSON). A stream starts after
``Last-Event-ID`` (what EventSource sends when it reconnects; it wins over
``after=``, which the reconnect repeats) or ``after=``, catches up from storage,
then waits for new events, with a comment every ``stream_heartbeat`` seconds of
silence. Every error is answered before the stream starts.

Bounds, each ending the stream with a last message the client can act on (it
resumes by id, losing nothing):

- open streams per token and in all, per process: 429 + ``Retry-After`` beyond;
- a client that has not taken what was sent within ``stream_write_timeout``, or
  lets more than ``stream_max_buffer`` bytes wait, gets ``event: close`` (reason
  "slow consumer") after what it was sent, and the connection is closed once it
  takes that, or cut ``stream_write_timeout`` later;
- shutdown (SIGTERM): every stream writes a last comment and ends at once;
- a token revoked while its stream is open: ``event: close`` (reason "token
  revoked") within ``TOKEN_RECHECK`` seconds (or the heartbeat interval).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence

from aiohttp import web

import storage
from syndicate.core.errors import Problem
from syndicate.core.settings import Settings
from syndicate.web.appkeys import SETTINGS
from syndicate.web.auth import authenticate, still_valid
from syndicate.web.changelog import CHANGE_LOG, ChangeLog, EventFilter, Item
from syndicate.web.eventquery import parse_filter, resolve_after
from syndicate.web.middleware import REQUEST_ID_HEADER, request_id
from syndicate.web.operations import ANY_TOKEN, ApiRoutes
from syndicate.web.requests import query_param
from syndicate.web.routes.events import EVENT_QUERY

logger = logging.getLogger("syndicate.stream")
routes = ApiRoutes()

#: What a client waits before reconnecting (the SSE ``retry:`` field), milliseconds.
RETRY_MS = 2000
#: Seconds a client refused for the caps is told to wait (``Retry-After``).
RETRY_AFTER = 10
#: Items read (and written) at once while catching up.
PAGE_SIZE = 500
#: How often a waiting stream looks whether its client is still connected, seconds.
LIVENESS = 1.0
#: Seconds a stream's last comment at shutdown has to reach a client that is not reading.
SHUTDOWN_GRACE = 1.0
#: Bytes of events per write (a single larger event goes in a write of its own).
CHUNK_BYTES = 64 * 1024
#: How often a last word's delivery is looked at, seconds.
DRAIN_POLL = 0.05
HEARTBEAT = b": heartbeat\n\n"
SHUTDOWN = b": server shutting down, reconnect with Last-Event-ID\n\n"
SLOW = (
    b": you did not read what was sent in time; reconnect with Last-Event-ID\n"
    b"event: close\n"
    b'data: {"reason":"slow consumer","resume":"reconnect with Last-Event-ID"}\n\n'
)
REVOKED = b': the token was revoked\nevent: close\ndata: {"reason":"token revoked"}\n\n'
#: How often an open stream looks whether its token was revoked, seconds at most (the
#: heartbeat interval when shorter).
TOKEN_RECHECK = 10.0
UNAVAILABLE = b": the database is unavailable, reconnect with Last-Event-ID\n\n"
FAILED = b": the stream failed, reconnect with Last-Event-ID\n\n"


#: What /openapi.json says the stream's 200 carries (it has no response model).
CONTENT: dict[tuple[str, str], dict[str, object]] = {
    ("get", "/api/events/stream"): {
        "text/event-stream": {
            "schema": {
                "type": "string",
                "description": "Server-Sent Events: first `retry: 2000`; then per event "
                "`id: <event id>` and `data: <the item of GET /api/events, one line of "
                "JSON>`; `: heartbeat` comments in silence; a last comment at shutdown; "
                '`event: close` with `data: {"reason":"slow consumer",...}` before a '
                "slow client is disconnected. Reconnect with Last-Event-ID.",
            }
        }
    }
}


class _Stream:
    """One open stream: whose, and whether it may be interrupted (it is waiting
    or writing, not reading the database) when the server shuts down."""

    __slots__ = ("interruptible", "task", "token_id")

    def __init__(self, token_id: int) -> None:
        self.token_id = token_id
        self.task = asyncio.current_task()
        self.interruptible = False


class Streams:
    """This process's open streams: the caps, and the shutdown that ends them."""

    def __init__(self, settings: Settings) -> None:
        self.per_token = settings.stream_max_per_token
        self.total = settings.stream_max
        self.closing = False
        self._open: set[_Stream] = set()
        self._by_token: Counter[int] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, token_id: int) -> _Stream:
        """A new stream of the token; 429 past either cap, 503 while shutting down."""
        if self.closing:
            raise Problem(503, "the server is shutting down", headers={"Retry-After": "1"})
        retry = {"Retry-After": str(RETRY_AFTER)}
        if self._by_token[token_id] >= self.per_token:
            raise Problem(
                429,
                f"this token has {self.per_token} streams open, the most it may; "
                "close one or try again later",
                headers=retry,
            )
        if len(self._open) >= self.total:
            raise Problem(
                429, f"the server has {self.total} streams open; try again later", headers=retry
            )
        stream = _Stream(token_id)
        self._open.add(stream)
        self._by_token[token_id] += 1
        return stream

    def release(self, stream: _Stream) -> None:
        if stream in self._open:
            self._open.discard(stream)
            self._by_token[stream.token_id] -= 1
            if not self._by_token[stream.token_id]:
                del self._by_token[stream.token_id]

    def close_all(self) -> None:
        """Shutdown: no new streams; each one waiting or writing is interrupted
        (it writes its last comment and ends); one reading ends after the read."""
        self.closing = True
        for stream in self._open:
            if stream.interruptible and stream.task is not None:
                stream.task.cancel()


STREAMS = web.AppKey("streams", Streams)


def install(app: web.Application) -> None:
    """Give ``app`` its stream registry and the shutdown hook that ends the streams
    (``on_shutdown`` runs before the server waits for handlers to finish)."""
    app[STREAMS] = Streams(app[SETTINGS])
    app.on_shutdown.append(_end_streams)


async def _end_streams(app: web.Application) -> None:
    app[STREAMS].close_all()


@routes.operation(
    "get",
    "/api/events/stream",
    "The change log as Server-Sent Events (id: the event id; resume with Last-Event-ID)",
    ANY_TOKEN,
    {200: None},
    query=EVENT_QUERY,
    errors=(400, 401, 404, 410, 422, 429),
)
async def stream(request: web.Request) -> web.StreamResponse:
    token = await authenticate(request, "partner", "operator")
    flt = await parse_filter(request)
    last_id = request.headers.get("Last-Event-ID", "").strip()
    if last_id:
        after = await resolve_after(request, last_id, field="Last-Event-ID")
    else:
        after = await resolve_after(request, query_param(request, "after"))
    streams = request.app[STREAMS]
    entry = streams.admit(token.id)
    try:
        response = web.StreamResponse(
            headers={
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                "X-Content-Type-Options": "nosniff",
                REQUEST_ID_HEADER: request_id(request),
            }
        )
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        await response.prepare(request)
        sender = _Sender(request, response, streams, entry)
        last = await sender.run(request.app[CHANGE_LOG], after, flt)
        if last is not None:
            # Still counted against the caps meanwhile: a client that does not take
            # its last word holds the connection (and its buffer) until cut off.
            await sender.last_word(last)
        return response
    finally:
        streams.release(entry)


class _Sender:
    """Writes one stream: pages of the change log, heartbeats, its last word."""

    def __init__(
        self, request: web.Request, response: web.StreamResponse, streams: Streams, entry: _Stream
    ) -> None:
        settings = request.app[SETTINGS]
        self.request = request
        self.response = response
        self.streams = streams
        self.entry = entry
        self.heartbeat = settings.stream_heartbeat
        self.write_timeout = settings.stream_write_timeout
        self.max_buffer = settings.stream_max_buffer
        self.last_write = time.monotonic()
        self.writing: asyncio.Future[None] | None = None
        self.recheck = min(TOKEN_RECHECK, self.heartbeat)
        self.checked = time.monotonic()

    async def run(self, log: ChangeLog, after: int, flt: EventFilter) -> bytes | None:
        """Send until the client leaves (None: nothing more can reach it), is too
        slow, or the server stops; returns the last word to send."""
        try:
            await self.write(f"retry: {RETRY_MS}\n\n".encode())
            while not (self.streams.closing or log.closing):
                if time.monotonic() - self.checked >= self.recheck:
                    self.checked = time.monotonic()
                    if not await still_valid(self.request):
                        logger.info(
                            "stream ended: token revoked",
                            extra={"request_id": request_id(self.request)},
                        )
                        return REVOKED
                page = await log.read(after, flt, PAGE_SIZE)
                if page.items:
                    await self.send(page.items)
                after = page.last_seq
                if page.more:
                    continue
                silence = time.monotonic() - self.last_write
                if silence >= self.heartbeat:
                    await self.write(HEARTBEAT)
                elif not self.streams.closing:
                    # At most LIVENESS apart, so a client that left frees its slot
                    # within a second, not at the next heartbeat.
                    with _Interruptible(self.entry):
                        await log.wait(after, min(self.heartbeat - silence, LIVENESS))
                if self.gone():
                    return None
            return SHUTDOWN
        except asyncio.CancelledError:
            # A cancel from ``Streams.close_all`` is an order to stop, not to die: it
            # is taken back, so the last word can be written. Any other cancel goes on.
            task = asyncio.current_task()
            if not self.streams.closing or task is None:
                raise
            task.uncancel()
            return None if self.gone() else SHUTDOWN
        except _TooSlow as exc:
            logger.info(
                "stream ended: slow consumer",
                extra={"request_id": request_id(self.request), "why": str(exc)},
            )
            return SLOW
        except ConnectionError:  # the client left
            return None
        except storage.StorageError as exc:
            logger.warning(
                "stream ended: the database failed",
                extra={"request_id": request_id(self.request), "error": str(exc)},
            )
            return UNAVAILABLE
        except Exception:
            logger.exception("stream failed", extra={"request_id": request_id(self.request)})
            return FAILED

    async def send(self, items: Sequence[Item]) -> None:
        """The items as SSE events, in writes of about ``CHUNK_BYTES``: each write
        waits for the client to take the one before (aiohttp drains past 64 KiB), so
        what waits in memory for a client is about one write, whatever the page."""
        frames: list[bytes] = []
        size = 0
        for item in items:
            frame = b"id: " + item.id.encode() + b"\ndata: " + item.body + b"\n\n"
            frames.append(frame)
            size += len(frame)
            if size >= CHUNK_BYTES:
                await self.write(b"".join(frames))
                frames, size = [], 0
        if frames:
            await self.write(b"".join(frames))

    def gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()

    async def write(self, data: bytes) -> None:
        """Send ``data``; ``_TooSlow`` when the client lets too much wait, or does
        not take it in time (memory stays bounded either way)."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client left")
        waiting = transport.get_write_buffer_size()
        if waiting > self.max_buffer:
            raise _TooSlow(f"{waiting} bytes not taken by the client")
        # The write runs as a task of its own that a timeout (or shutdown) does not
        # cancel: a cancelled write leaves aiohttp's drain waiter cancelled, and every
        # later write on the connection, the last word's included, then fails at once.
        writing = asyncio.ensure_future(self.response.write(data))
        writing.add_done_callback(_retrieve)
        self.writing = writing
        with _Interruptible(self.entry):
            done, _ = await asyncio.wait({writing}, timeout=self.write_timeout)
        if not done:
            raise _TooSlow(f"not taken within {self.write_timeout:g} s")
        writing.result()  # a ConnectionError when the client left
        self.last_write = time.monotonic()

    async def last_word(self, data: bytes) -> None:
        """Write ``data`` and end the response and the connection. A client that does
        not take it in time (at shutdown: 1 s) is cut off, its buffer dropped."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            return
        grace = min(self.write_timeout, SHUTDOWN_GRACE) if data is SHUTDOWN else self.write_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # The connection ends with the stream: a client ended for being slow (or for a
        # revoked token, or at shutdown) does not keep it, or what waits in it, idle.
        self.response.force_close()
        try:
            async with asyncio.timeout(grace):
                if self.writing is not None and not self.writing.done():
                    await asyncio.shield(self.writing)  # what was sent goes first
                await self.response.write_eof(data)
            # write_eof hands the bytes to the transport without waiting for the client
            # to take them: wait for that (to the same deadline), so a client that does
            # not is cut off rather than kept with what waits for it.
            while transport.get_write_buffer_size() and not transport.is_closing():
                if loop.time() >= deadline:
                    raise TimeoutError
                await asyncio.sleep(DRAIN_POLL)
        except TimeoutError:
            transport.abort()
        except ConnectionError:
            pass


def _retrieve(task: asyncio.Future[None]) -> None:
    """A write that ends after its stream stopped waiting for it (the connection was
    cut) has its exception taken here, not reported as never retrieved."""
    if not task.cancelled():
        task.exception()


class _Interruptible:
    """While inside, ``Streams.close_all`` may cancel the stream's task."""

    __slots__ = ("entry",)

    def __init__(self, entry: _Stream) -> None:
        self.entry = entry

    def __enter__(self) -> None:
        self.entry.interruptible = True

    def __exit__(self, *exc: object) -> None:
        self.entry.interruptible = False


class _TooSlow(Exception):
    """The client does not take what it is sent."""
