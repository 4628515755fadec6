"""RFC 9457 problem details: the one shape every error response takes.

Problem(status, title, detail, errors)   raised anywhere (core.errors)
error_response                           turns Problem, aiohttp's HTTP errors and
                                         storage errors into problem+json; an
                                         unexpected exception is logged and
                                         answered 500 without details (called by
                                         the per-route wrapper, web.middleware).

Field validation errors are content.validation; reading requests, web.requests.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError

import storage
from syndicate.content.responses import ProblemOut, to_json
from syndicate.core.errors import Problem
from syndicate.web.middleware import request_id

logger = logging.getLogger("syndicate.problems")  # the name logs have always had

PROBLEM_JSON = "application/problem+json"


def problem_response(
    problem: Problem, request: web.Request | None = None, *, rid: str | None = None
) -> web.Response:
    """The problem+json response (``ProblemOut``); ``request_id`` is the request's,
    or ``rid``. Absent fields are left out, not sent as null."""
    if request is not None:
        rid = request_id(request)
    # errors_omitted 0 (none left out) is left out too.
    body = ProblemOut.model_validate(
        {
            "type": problem.type,
            "title": problem.title,
            "status": problem.status,
            "detail": problem.detail,
            "request_id": rid,
            "errors": problem.errors,
            "errors_omitted": (problem.errors_omitted or None)
            if problem.errors is not None
            else None,
        }
    )
    return web.Response(
        status=problem.status,
        body=to_json(body, exclude_none=True),
        content_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def _from_http_exception(exc: web.HTTPException) -> Problem:
    detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        detail = "the request body is larger than this service accepts"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return Problem(exc.status, detail, headers=headers)


def error_response(request: web.Request, exc: Exception) -> web.StreamResponse | None:
    """The problem+json answer for an exception a handler raised; ``None`` for
    non-error HTTP exceptions (redirects), which aiohttp answers itself."""
    problem = problem_for(request, exc)
    return None if problem is None else problem_response(problem, request)


def problem_for(request: web.Request, exc: Exception) -> Problem | None:
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
    if isinstance(exc, storage.ArticleAlreadyPublished):
        message = "already published: it cannot be rescheduled to a future time"
        return Problem(409, str(exc), errors=[{"field": "published_at", "message": message}])
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
