"""The aiohttp application, ``create_app(settings, *, storage=None)``, and the
runner ``syndicate serve`` puts it on a socket with, ``make_runner(app, settings)``:
the access log, header limits, keep-alive and header read timeouts, and
problem+json for requests aiohttp cannot parse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestPayloadError

from storage import Storage, open_storage
from syndicate.core.errors import Problem
from syndicate.core.rate import RateLimiter
from syndicate.core.settings import Settings
from syndicate.delivery.metrics import Metrics
from syndicate.delivery.service import DeliveryService
from syndicate.web import openapi, portal
from syndicate.web.appkeys import DELIVERY, SETTINGS, STORAGE
from syndicate.web.changelog import CHANGE_LOG, ChangeLog
from syndicate.web.limits import RATE_LIMITER
from syndicate.web.middleware import (
    PROTOCOL_ERROR,
    REQUEST_ID_HEADER,
    AccessLog,
    access_logger,
    new_request_id,
    served,
)
from syndicate.web.operations import QUERY_PARAMS, query_params
from syndicate.web.problems import error_response, problem_response
from syndicate.web.routes import events, hub, metrics, pages, sitemaps, stream
from syndicate.web.routes import feeds as feed_http


def create_app(settings: Settings, *, storage: Storage | None = None) -> web.Application:
    """Build the app. With ``storage`` given the caller owns it (and closes it);
    otherwise the app opens ``settings.database`` on startup and closes it on cleanup.
    The delivery fan-out and dispatcher run as background tasks of the app."""
    app = web.Application(client_max_size=settings.max_body_size)
    app[SETTINGS] = settings
    app[feed_http.FEED_CACHE] = feed_http.FeedCache()
    app[sitemaps.SITEMAP_CACHE] = sitemaps.SitemapCache()
    app[metrics.METRICS] = Metrics()
    app[RATE_LIMITER] = RateLimiter(settings.write_rate, settings.write_burst)
    stream.install(app)
    app[events.LONG_POLLS] = events.LongPolls()
    if storage is not None:
        app[STORAGE] = storage
    else:
        app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_delivery_ctx)
    app.cleanup_ctx.append(_change_log_ctx)
    app.on_shutdown.append(_stop_change_log)
    app.cleanup_ctx.append(hub.hub_ctx)
    # The JSON API's tables are the ones /openapi.json documents: one declaration each.
    app[openapi.OPENAPI] = openapi.document_bytes(settings)
    app[QUERY_PARAMS] = query_params(openapi.ROUTES)
    others = [
        metrics.routes,
        feed_http.routes,
        pages.routes,
        sitemaps.routes,
        hub.routes,
        openapi.routes,
    ]
    for table in [*openapi.API_TABLES, *others]:
        app.add_routes(_served(table))
    portal.install(app)
    feed_http.add_feed_route(app, served(feed_http.feed, error_response), fast=settings.fast_paths)
    # Last, so only the unmatched; [\s\S]: a decoded path may hold a newline.
    app.add_routes(_served([web.route("*", r"/{path:[\s\S]*}", no_route)]))
    return app


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = await open_storage(
        settings.database,
        pool_min=settings.db_pool_min,
        pool_max=settings.db_pool_max,
        fast_paths=settings.fast_paths,
    )
    app[STORAGE] = store
    try:
        yield
    finally:
        await store.close()


async def _delivery_ctx(app: web.Application) -> AsyncIterator[None]:
    service = DeliveryService(app[STORAGE], app[SETTINGS], metrics=app[metrics.METRICS])
    app[DELIVERY] = service
    await service.start()
    service.notify()
    try:
        yield
    finally:
        await service.stop()


async def _change_log_ctx(app: web.Application) -> AsyncIterator[None]:
    log = ChangeLog(app[STORAGE], app[SETTINGS].base_url)
    app[CHANGE_LOG] = log
    await log.start()
    try:
        yield
    finally:
        await log.stop()


async def _stop_change_log(app: web.Application) -> None:
    """Long-polls and streams answer at once on shutdown, before the server waits for
    the requests under way."""
    if CHANGE_LOG in app:
        await app[CHANGE_LOG].stop()


def _served(table: Iterable[web.AbstractRouteDef]) -> list[web.AbstractRouteDef]:
    """Each route's handler wrapped by ``logs.served``: request id, problem+json for
    errors, ``nosniff`` (the service's middleware, without aiohttp's middleware layers)."""
    wrapped: list[web.AbstractRouteDef] = []
    for route in table:
        assert isinstance(route, web.RouteDef), route
        handler = served(route.handler, error_response)
        wrapped.append(web.RouteDef(route.method, route.path, handler, route.kwargs))
    return wrapped


async def no_route(request: web.Request) -> web.StreamResponse:
    """What no route matched: 405 with ``Allow`` when the path exists under other
    methods, else 404 (both answered as problem+json by ``served``)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def make_runner(app: web.Application, settings: Settings, **kwargs: Any) -> web.AppRunner:
    """The runner ``syndicate serve`` uses (``kwargs``: more ``AppRunner`` options)."""
    return _Runner(
        app,
        access_log_class=AccessLog,
        access_log=access_logger,
        max_line_size=settings.max_header_size,
        max_field_size=settings.max_header_size,
        keepalive_timeout=settings.keepalive_timeout,
        header_timeout=settings.header_timeout,
        **kwargs,
    )


class _Runner(web.AppRunner):
    """aiohttp's runner, serving connections with ``GuardedRequestHandler``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _Server(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **server._kwargs,
        )


class _Server(web.Server):
    """aiohttp's server (the protocol factory), making ``GuardedRequestHandler``s."""

    def __call__(self) -> web.RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


_PROTOCOL_DETAILS: list[tuple[type[Exception], str]] = [
    (http_exceptions.BadStatusLine, "the request line is not valid HTTP/1.1"),
    (http_exceptions.InvalidHeader, "a header name or value is not valid"),
    (http_exceptions.InvalidURLError, "the request target is not a valid URL"),
    (http_exceptions.PayloadEncodingError, "the body's framing or encoding is not valid"),
    (http_exceptions.BadHttpMessage, "a header is malformed or holds a character it may not"),
]


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol with a header read timeout, and problem+json
    (one access line, no traceback) for requests it cannot parse.

    The header clock starts when a connection opens and when the first bytes of a
    request arrive; a complete request head stops it. At ``header_timeout`` an idle
    connection is closed; one with a response under way closes after it. Between
    requests, aiohttp's ``keepalive_timeout`` closes idle connections. The hooks
    rely on ``RequestHandler`` internals (``_request_count``, ``_messages``), so
    aiohttp is pinned.

    The clock is a start time and at most one timer per connection: a request that
    completes its head only clears the start time, and the timer, when it fires,
    waits again for the newest start's deadline or finds nothing to do. Arming and
    cancelling a timer for every request on a kept-alive connection cost a fifth
    of what the service adds to aiohttp on a small feed's revalidation."""

    __slots__ = ("_body", "_header_since", "_header_timeout", "_header_timer", "_received")

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A body that fails to decode, or a client that leaves, while aiohttp reads
        the rest of a request after its response is the client's doing: one debug
        line, not an ERROR with a traceback (anyone could fill the log with those)."""
        exc = kw.get("exc_info")
        if isinstance(
            exc, http_exceptions.BadHttpMessage | RequestPayloadError | ConnectionResetError
        ):
            self.logger.debug("request body not read to the end: %s", exc)
            return
        super().log_exception(*args, **kw)

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_since: float | None = None  # when the clock started, if running
        self._body: StreamReader | None = None  # the body being received, if any
        self._received = 0  # bytes of the request head under way

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_header_clock()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_clock()
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._header_since is None and (self._body is None or self._body.is_eof()):
            self._start_header_clock()
        self._received += len(data)
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._stop_header_clock()
            self._body = self._messages[-1][1] if self._messages else None

    def _start_header_clock(self) -> None:
        if self._header_timeout > 0:
            self._received = 0
            self._header_since = since = self._loop.time()
            if self._header_timer is None:
                due = since + self._header_timeout
                self._header_timer = self._loop.call_at(due, self._header_check)

    def _stop_header_clock(self) -> None:
        self._header_since = None

    def _header_check(self) -> None:
        self._header_timer = None
        since = self._header_since
        if since is None:  # no request head under way: the next one arms a timer
            return
        due = since + self._header_timeout
        if self._loop.time() < due:  # a later request's clock: wait for its deadline
            self._header_timer = self._loop.call_at(due, self._header_check)
            return
        self._header_since = None
        self._header_late()

    def _header_late(self) -> None:
        if self.transport is None:
            return
        if self._received:
            peer = self.transport.get_extra_info("peername")
            access_logger.info(
                "closed: request headers not received in time",
                extra={
                    "remote": peer[0] if isinstance(peer, tuple) else None,
                    "received_bytes": self._received,
                    "header_timeout": self._header_timeout,
                },
            )
        if self._request_in_progress or self._messages:
            self.close()  # after the response under way
        else:
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (4xx) or a handler that
        failed outside ``served`` (5xx), as problem+json; the connection closes.
        A 4xx is left to its access line (``PROTOCOL_ERROR``): a client's bad bytes
        are not the service's error, and no traceback is written for them."""
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            problem = Problem(status, "an internal error occurred")
        else:
            reason = (message or str(exc or "")).strip().splitlines() or ["not valid HTTP"]
            # The parser's reason without the bytes it quotes (a header with a token).
            request[PROTOCOL_ERROR] = reason[0].partition(": b'")[0].rstrip(":")[:200]
            detail = next(
                (text for kind, text in _PROTOCOL_DETAILS if isinstance(exc, kind)),
                "the request is not valid HTTP/1.1",
            )
            if isinstance(exc, http_exceptions.LineTooLong):
                detail = f"the request line or a header is longer than {self.max_field_size} bytes"
            problem = Problem(status, detail)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was under way; the connection is closed")
        rid = new_request_id()
        response = problem_response(problem, rid=rid)
        response.headers[REQUEST_ID_HEADER] = rid
        response.force_close()
        return response
