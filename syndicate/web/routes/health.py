"""Liveness and readiness probes."""

from __future__ import annotations

from aiohttp import web

import storage
from syndicate.content.responses import HealthOut
from syndicate.core.errors import Problem
from syndicate.web.appkeys import STORAGE
from syndicate.web.operations import PUBLIC, ApiRoutes, model_response

routes = ApiRoutes()


@routes.operation("get", "/healthz", "Liveness", PUBLIC, {200: HealthOut})
async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving (says nothing about the database)."""
    return model_response(HealthOut(status="ok"), exclude_none=True)


@routes.operation(
    "get", "/readyz", "Readiness (the database answers)", PUBLIC, {200: HealthOut}, errors=(503,)
)
async def readyz(request: web.Request) -> web.Response:
    """Ready to serve: the database answers."""
    try:
        await request.app[STORAGE].ping()
    except storage.StorageError as exc:
        raise Problem(503, f"not ready: {exc}", headers={"Retry-After": "5"}) from None
    return model_response(HealthOut(status="ok", database="ok"))
