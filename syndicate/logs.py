"""Request ids, one access-log line per request, and JSON log lines.

Every response carries ``X-Request-Id`` (the caller's, when it sent a sane one,
else a new one); every problem+json body carries it as ``request_id``; every
log line written while handling the request can carry it too.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

access_logger = logging.getLogger("syndicate.access")
REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorAnswer = Callable[[web.Request, Exception], "web.StreamResponse | None"]
# New request ids: 64 random bits per process, then a counter (32 hex digits in
# all, like a UUID's): unique across processes without a syscall per request.
_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def request_id(request: web.Request) -> str:
    value: str = request.get(REQUEST_ID, "-")
    return value


def request_middleware(on_error: ErrorAnswer) -> Middleware:
    """The service's one middleware (each layer costs on every request): a request
    id, errors answered by ``on_error`` (``None``: let the exception through),
    ``nosniff`` and the id on every response, one access-log line."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        rid = incoming if incoming and _SANE_ID.match(incoming) else new_request_id()
        request[REQUEST_ID] = rid
        started = time.perf_counter()
        try:
            response = await handler(request)
        except Exception as exc:
            answer = on_error(request, exc)
            if answer is None:
                raise
            response = answer
        _finish(request, response, rid, started)
        return response

    return middleware


def _finish(request: web.Request, response: web.StreamResponse, rid: str, started: float) -> None:
    response.headers[REQUEST_ID_HEADER] = rid
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if not access_logger.isEnabledFor(logging.INFO):
        return
    resource = request.match_info.route.resource
    access_logger.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status,
        extra={
            "request_id": rid,
            "method": request.method,
            "path": request.path,
            "route": resource.canonical if resource is not None else None,
            "status": response.status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "remote": request.remote,
        },
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Root logging for the CLI: ``fmt`` is ``text`` or ``json``."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
