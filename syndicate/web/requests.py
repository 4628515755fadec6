"""Reading a request: its query parameters (unknown ones refused), its body (with a
deadline) and its JSON. Each failure is a ``Problem`` naming what to fix."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from aiohttp import hdrs, web

from syndicate.content.validation import invalid, invalid_fields
from syndicate.core.errors import Problem
from syndicate.web.appkeys import SETTINGS
from syndicate.web.operations import QUERY_PARAMS


def check_query(request: web.Request) -> None:
    """422 naming each query parameter the JSON operation does not take (called
    once the caller is authenticated: 401 and 403 come first)."""
    resource = request.match_info.route.resource
    if resource is None:
        return
    allowed = request.app[QUERY_PARAMS].get((request.method, resource.canonical))
    if allowed is None:  # not an operation (405, 404): let routing answer
        return
    unknown = sorted(name for name in set(request.query) if name not in allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise invalid_fields(
            [
                {
                    "field": name,
                    "message": f"unknown query parameter (this operation takes: {known})",
                }
                for name in unknown
            ]
        )


def query_param(request: web.Request, name: str) -> str | None:
    """A query parameter: None when absent, 422 when present but empty, or given
    more than once (which one was meant?)."""
    if name not in request.query:
        return None
    values = request.query.getall(name)
    if len(values) > 1:
        raise invalid(name, "is given more than once; give it once")
    value = values[0]
    if not value:
        raise invalid(name, "must not be empty (leave the parameter out instead)")
    return value


def body_deadline(request: web.Request) -> asyncio.Timeout:
    """The time a client has to send its body (``body_timeout``): a body trickled a
    byte at a time holds a connection no longer (headers have ``header_timeout``)."""
    return asyncio.timeout(request.app[SETTINGS].body_timeout)


async def read_body(request: web.Request) -> bytes:
    """The request body; 408 problem+json if it takes longer than ``body_timeout``."""
    try:
        async with body_deadline(request):
            return await request.read()
    except TimeoutError:
        raise body_too_slow(request) from None


def body_too_slow(request: web.Request) -> Problem:
    seconds = request.app[SETTINGS].body_timeout
    return Problem(408, f"the request body took longer than {seconds:g} s to arrive")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON: 415 for another type, 413 too large, 400 malformed."""
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise Problem(415, f"send application/json, not {ctype or 'no content type'}")
    raw = await read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(400, f"the body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise Problem(400, "the body is empty; send a JSON document")
    try:
        # orjson: 3 times faster on a 1 MB batch. What it refuses (lone surrogate
        # escapes, NaN, numbers beyond a double) goes to json, which accepts or words
        # the error as before. (It reads integers beyond 64 bits as floats: no input
        # model has an integer field, and a string field refuses either.)
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Problem(
            400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise Problem(400, "malformed JSON: nested too deeply") from None
    except ValueError:  # an integer past Python's 4,300-digit conversion limit
        raise Problem(400, "malformed JSON: a number has too many digits") from None


def not_modified(
    request: web.Request, etags: Collection[str], last_modified: datetime | None
) -> bool:
    """RFC 9110 §13.2.2: ``If-None-Match`` wins (weak comparison, ``*`` included);
    ``If-Modified-Since`` only without it, against ``last_modified`` to the second."""
    if_none_match = request.headers.get(hdrs.IF_NONE_MATCH)
    if if_none_match is not None:
        if if_none_match in etags:  # the usual revalidation: the one tag we gave
            return True
        wanted = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in wanted or not wanted.isdisjoint(etags)
    if_modified_since = request.headers.get(hdrs.IF_MODIFIED_SINCE)
    if if_modified_since and last_modified is not None:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return last_modified.replace(microsecond=0) <= since
    return False
