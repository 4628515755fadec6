"""Request ids, the per-route wrapper (``served``) and one access-log line per request.
How log lines are written (text or JSON, escaped, secrets redacted): core.logfmt.

Every response carries ``X-Request-Id`` (the caller's, when it sent a sane one,
else a new one); every problem+json body carries it as ``request_id``; every
log line written while handling the request can carry it too.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from multidict import istr

from syndicate.core.logfmt import IN_MESSAGE

access_logger = logging.getLogger("syndicate.access")
REQUEST_ID = web.RequestKey("request_id", str)
#: Why aiohttp refused to parse a request (set on the request it answers 400).
PROTOCOL_ERROR = web.RequestKey("protocol_error", str)
REQUEST_ID_HEADER = istr("X-Request-Id")  # istr: header lookups skip case-folding
_NOSNIFF = istr("X-Content-Type-Options")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorAnswer = Callable[[web.Request, Exception], "web.StreamResponse | None"]
FastAnswer = Callable[[web.Request], "web.StreamResponse | None"]
# New request ids: 64 random bits per process, then a counter (32 hex digits in
# all, like a UUID's): unique across processes without a syscall per request.
_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def request_id(request: web.Request) -> str:
    value: str = request.get(REQUEST_ID, "-")
    return value


def fast_path(fast: FastAnswer) -> Callable[[Handler], Handler]:
    """Mark a handler as having a synchronous fast path: ``fast(request)`` answers
    without awaiting anything, or returns None to let the handler answer. ``served``
    tries it first, so a hit costs no coroutine of its own."""

    def mark(handler: Handler) -> Handler:
        handler.fast_path = fast  # type: ignore[attr-defined]
        return handler

    return mark


def served(handler: Handler, on_error: ErrorAnswer) -> Handler:
    """``handler`` as the service answers every route: with a request id, errors
    answered by ``on_error`` (``None``: let the exception through), and ``nosniff``
    and the id on the response.

    A wrapper per route rather than an aiohttp middleware: with any middleware,
    aiohttp runs each request through two more layers, which cost a fifth of a
    feed revalidation's throughput. The access log is ``AccessLog`` (aiohttp's own
    hook, free while INFO is off)."""
    fast: FastAnswer | None = getattr(handler, "fast_path", None)

    async def answer(request: web.Request) -> web.StreamResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER)
        rid = incoming if incoming and _SANE_ID.match(incoming) else new_request_id()
        request[REQUEST_ID] = rid
        try:
            response = None if fast is None else fast(request)
            if response is None:
                response = await handler(request)
        except Exception as exc:
            answer = on_error(request, exc)
            if answer is None:
                raise
            response = answer
        headers = response.headers
        headers[REQUEST_ID_HEADER] = rid
        if _NOSNIFF not in headers:
            headers[_NOSNIFF] = "nosniff"
        return response

    answer.__name__ = answer.__qualname__ = getattr(handler, "__name__", "handler")
    answer.__doc__ = handler.__doc__
    answer.__wrapped__ = handler  # type: ignore[attr-defined]
    return answer


class AccessLog(AbstractAccessLogger):
    """One line per request, with the request id, route and latency (aiohttp's
    access-log hook: ``web.AppRunner(app, access_log_class=AccessLog,
    access_log=access_logger)``). aiohttp asks ``enabled`` once per connection, so
    below INFO it costs nothing per request.

    Requests aiohttp could not parse (``PROTOCOL_ERROR`` set) get their line too,
    with ``-`` for method and path and the parser's reason as ``error``."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        rid = request.get(REQUEST_ID)
        route = None
        if rid is not None and isinstance(request, web.Request):
            # ``served`` set the id, so routing ran: match_info is there.
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else None
        else:
            rid = response.headers.get(REQUEST_ID_HEADER, "-")
        error = request.get(PROTOCOL_ERROR)
        method, path = ("-", "-") if error is not None else (request.method, request.path)
        fields: dict[str, Any] = {
            "request_id": rid,
            "method": method,
            "path": path,
            "route": route,
            "status": response.status,
            "latency_ms": round(time * 1000, 3),
            "remote": request.remote,
            IN_MESSAGE: ("method", "path", "status"),
        }
        if error is not None:
            fields["error"] = error
        self.logger.info("%s %s %s", method, path, response.status, extra=fields)
