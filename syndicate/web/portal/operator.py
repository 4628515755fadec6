"""The operator's pages of the portal."""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()
