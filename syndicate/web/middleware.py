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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from multidict import istr

access_logger = logging.getLogger("syndicate.access")
REQUEST_ID = web.RequestKey("request_id", str)
#: Why aiohttp refused to parse a request (set on the request it answers 400).
PROTOCOL_ERROR = web.RequestKey("protocol_error", str)
REQUEST_ID_HEADER = istr("X-Request-Id")  # istr: header lookups skip case-folding
_NOSNIFF = istr("X-Content-Type-Options")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

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
            _IN_MESSAGE: ("method", "path", "status"),
        }
        if error is not None:
            fields["error"] = error
        self.logger.info("%s %s %s", method, path, response.status, extra=fields)


# What a log line may not carry as is. Control characters (C0, DEL, C1), Unicode
# line and paragraph separators and bidirectional overrides: each could start a
# forged line or hide text in a terminal; they are written as escapes.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# Secrets: our tokens and webhook secrets wherever they appear, any bearer
# credential, and whatever follows an ``Authorization`` header name.
_SECRET = re.compile(
    r"(?P<prefix>syn_|whsec_)[A-Za-z0-9+/=_-]{8,}"
    r"|(?P<scheme>\b[Bb][Ee][Aa][Rr][Ee][Rr])\s+[^\s'\",;]+"
    r"|(?P<header>[Aa]uthorization['\"]?\s*[:=]\s*['\"]?)(?:[A-Za-z]+\s+)?[^\s'\",;]+"
)
REDACTED = "[redacted]"
# Keys a record carries for the formatters, not as fields of its own.
_IN_MESSAGE = "_in_message"


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _redact_match(match: re.Match[str]) -> str:
    for group in ("prefix", "scheme", "header"):
        kept = match.group(group)
        if kept is not None:
            return f"{kept} {REDACTED}" if group == "scheme" else kept + REDACTED
    return REDACTED  # pragma: no cover - one of the groups always matched


def clean(text: str) -> str:
    """``text`` as a log line may carry it: secrets redacted, control characters
    escaped (``\\n``, ``\\x00``, ``\\u2028``), so one value stays on one line."""
    return _SECRET.sub(_redact_match, _UNSAFE.sub(_escape_char, text))


def _clean_value(value: Any) -> Any:
    """A field value for a log line: strings cleaned, containers walked, numbers,
    booleans and None as they are, anything else by its ``str``."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): _clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean_value(v) for v in value]
    return clean(str(value))


def _fields(record: logging.LogRecord) -> list[tuple[str, Any]]:
    """The record's ``extra`` fields, cleaned."""
    return [
        (clean(key), _clean_value(value))
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    ]


def _clean_block(text: str) -> str:
    """A traceback or stack, cleaned line by line and indented: nothing in it
    (an exception message carrying a request's bytes) can start a line of its own."""
    return "\n".join("  " + clean(line) for line in text.splitlines())


_LOGFMT_BARE = re.compile(r"[^\s\"=]+")


def _logfmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if _LOGFMT_BARE.fullmatch(text):
        return text
    return '"' + text.replace('"', '\\"') + '"'


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER MESSAGE key=value ...``: the message, then every ``extra``
    field (logfmt-style, quoted when it holds spaces) but those the message already
    shows; a traceback follows indented. Every value is cleaned (``clean``)."""

    def format(self, record: logging.LogRecord) -> str:
        shown = getattr(record, _IN_MESSAGE, ())
        parts = [self.formatTime(record), record.levelname, record.name]
        parts.append(clean(record.getMessage()))
        parts.extend(
            f"{key}={_logfmt(value)}"
            for key, value in _fields(record)
            if value is not None and key not in shown
        )
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + _clean_block(self.formatException(record.exc_info))
        if record.stack_info:
            line += "\n" + _clean_block(self.formatStack(record.stack_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every ``extra``
    field, each value cleaned as in the text format."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": clean(record.getMessage()),
        }
        for key, value in _fields(record):
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = clean(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = clean(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str, fmt: str, stream: IO[str] | None = None) -> logging.Handler:
    """Root logging for the CLI: ``fmt`` is ``text`` or ``json``; lines go to
    ``stream`` (default stderr). Returns the handler installed."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return handler
