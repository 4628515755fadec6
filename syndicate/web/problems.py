"""RFC 9457 problem details: the one shape every error response takes.

Problem(status, title, detail, errors)   raised by handlers
error_response                           turns Problem, aiohttp's HTTP errors and
                                         storage errors into problem+json; an
                                         unexpected exception is logged and
                                         answered 500 without details (called by
                                         the middleware in logs.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError

import storage
from storage.jsoncodec import dumps
from syndicate.core.errors import Problem
from syndicate.web.appkeys import SETTINGS
from syndicate.web.middleware import request_id
from syndicate.web.openapi import QUERY_PARAMS

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: Validation errors a response lists; past it, it counts the rest.
MAX_ERRORS = 50
#: Characters of one error's field or message a response carries.
MAX_ERROR_TEXT = 200

M = TypeVar("M", bound=BaseModel)


def problem_response(
    problem: Problem, request: web.Request | None = None, *, rid: str | None = None
) -> web.Response:
    """The problem+json response; ``request_id`` is the request's, or ``rid``."""
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if request is not None:
        rid = request_id(request)
    if rid is not None:
        body["request_id"] = rid
    if problem.errors is not None:
        body["errors"] = problem.errors
        if problem.errors_omitted:
            body["errors_omitted"] = problem.errors_omitted
    return web.Response(
        status=problem.status,
        body=dumps(body),
        content_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def invalid(field: str, message: str) -> Problem:
    return invalid_fields([{"field": field, "message": message}])


def invalid_fields(errors: list[dict[str, str]]) -> Problem:
    """422 naming the first ``MAX_ERRORS`` errors; the body counts the rest."""
    shown = [_bounded(e) for e in errors[:MAX_ERRORS]]
    omitted = len(errors) - len(shown)
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in shown)
    if omitted:
        detail += f"; and {omitted} more"
    return Problem(422, detail, title="Invalid fields", errors=shown, errors_omitted=omitted)


def _bounded(error: dict[str, str]) -> dict[str, str]:
    """An error with its field and message cut to a readable length (a field
    path may hold a client's megabyte-long key)."""
    return {name: _cut(text, MAX_ERROR_TEXT) for name, text in error.items()}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _from_http_exception(exc: web.HTTPException) -> Problem:
    detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        detail = "the request body is larger than this service accepts"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return Problem(exc.status, detail, headers=headers)


def error_response(request: web.Request, exc: Exception) -> web.StreamResponse | None:
    """The problem+json answer for an exception a handler raised; ``None`` for
    non-error HTTP exceptions (redirects), which aiohttp answers itself."""
    problem = _problem_for(request, exc)
    return None if problem is None else problem_response(problem, request)


def _problem_for(request: web.Request, exc: Exception) -> Problem | None:
    """The answer for an exception; None for non-error HTTP exceptions (redirects)."""
    retry = {"Retry-After": "5"}
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, web.HTTPException):
        return _from_http_exception(exc) if exc.status >= 400 else None
    if isinstance(exc, storage.StorageUnavailable):
        logger.warning("database unavailable", extra={"error": str(exc)})
        return Problem(503, "the database is unavailable; try again shortly", headers=retry)
    if isinstance(exc, storage.NotFound):
        return Problem(404, str(exc))
    if isinstance(exc, storage.Conflict):
        return Problem(409, str(exc))
    if isinstance(exc, storage.StorageError):
        logger.error("storage error", extra={"error": str(exc)})
        return Problem(503, "the database failed to answer; try again shortly", headers=retry)
    if isinstance(exc, BadHttpMessage | RequestPayloadError):  # a body it cannot decode
        return Problem(400, "the request body could not be read (its encoding is not valid)")
    if isinstance(exc, ConnectionResetError):  # the client left before its body was whole
        return Problem(400, "the connection closed before the request body was complete")
    logger.exception(
        "unhandled error", extra={"path": request.path, "request_id": request_id(request)}
    )
    return Problem(500, "an internal error occurred")


def check_query(request: web.Request) -> None:
    """422 naming each query parameter the JSON operation does not take (called
    once the caller is authenticated: 401 and 403 come first)."""
    resource = request.match_info.route.resource
    if resource is None:
        return
    allowed = QUERY_PARAMS.get((request.method, resource.canonical))
    if allowed is None:  # not an operation (405, 404): let routing answer
        return
    unknown = sorted(name for name in set(request.query) if name not in allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise invalid_fields(
            [{"field": name, "message": f"unknown query parameter (this operation takes: {known})"}
             for name in unknown]
        )  # fmt: skip


def query_param(request: web.Request, name: str) -> str | None:
    """A query parameter: None when absent, 422 when present but empty."""
    if name not in request.query:
        return None
    value = request.query[name]
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


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=dumps(data),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def validation_errors(
    exc: ValidationError, prefix: str = "", *, limit: int | None = MAX_ERRORS
) -> list[dict[str, str]]:
    """pydantic errors as ``[{field, message}]`` with dotted field paths, each cut
    to ``MAX_ERROR_TEXT``: the first ``limit`` of them, then one entry counting the
    rest (``limit=None``: all)."""
    errors = []
    details = exc.errors(include_url=False)
    shown = details if limit is None else details[:limit]
    for error in shown:
        loc = [str(part) for part in error["loc"]]
        field = ".".join(loc) if loc else "body"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        message = message.removeprefix("Value error, ")
        if prefix:
            field = f"{prefix}.{field}" if field != "body" else prefix
        errors.append(_bounded({"field": field, "message": message}))
    if len(shown) < len(details):
        more = len(details) - len(shown)
        errors.append({"field": prefix or "body", "message": f"and {more} more errors"})
    return errors


def validate(
    model: type[M], data: Any, *, prefix: str = "", context: dict[str, Any] | None = None
) -> M:
    """Validate a JSON value against a model; 422 naming every bad field."""
    if not isinstance(data, dict):
        raise invalid_fields([{"field": prefix or "body", "message": "expected a JSON object"}])
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise invalid_fields(validation_errors(exc, prefix, limit=None)) from None
