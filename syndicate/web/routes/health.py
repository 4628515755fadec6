"""Liveness and readiness probes."""

from __future__ import annotations

from aiohttp import web

import storage
from syndicate.core.errors import Problem
from syndicate.web.appkeys import STORAGE
from syndicate.web.problems import json_response

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving (says nothing about the database)."""
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready to serve: the database answers."""
    try:
        await request.app[STORAGE].ping()
    except storage.StorageError as exc:
        raise Problem(503, f"not ready: {exc}", headers={"Retry-After": "5"}) from None
    return json_response({"status": "ok", "database": "ok"})
