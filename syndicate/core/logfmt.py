"""How log lines are written: logfmt-style text or one JSON object per line, every
value escaped (no forged lines) and every credential redacted. ``configure`` sets
the process up; the access log (web.middleware) and everything else write through it.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import IO, Any

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

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
IN_MESSAGE = "_in_message"


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
        shown = getattr(record, IN_MESSAGE, ())
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
