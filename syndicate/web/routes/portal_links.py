"""``POST /api/portal-links``: an operator makes a single-use portal sign-in link for
a partner (``syndicate portal-link`` does the same from the shell)."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from storage.records import format_time
from syndicate.content.models import PortalLinkIn
from syndicate.content.responses import PortalLinkOut
from syndicate.content.validation import validate
from syndicate.web.appkeys import SETTINGS, STORAGE
from syndicate.web.auth import authenticate
from syndicate.web.operations import OPERATOR, WRITE_ERRORS, ApiRoutes, model_response
from syndicate.web.portal.links import create_link
from syndicate.web.requests import read_json

routes = ApiRoutes()


@routes.operation(
    "post",
    "/api/portal-links",
    "Make a single-use portal sign-in link for a partner",
    OPERATOR,
    {201: PortalLinkOut},
    body=PortalLinkIn,
    errors=(*WRITE_ERRORS, 404),
)
async def create_portal_link(request: web.Request) -> web.Response:
    """The link signs the partner in once, within ``ttl_seconds``; it is shown only in
    this answer (only its hash is stored)."""
    await authenticate(request, "operator")
    body = validate(PortalLinkIn, await read_json(request))
    url, expires_at = await create_link(
        request.app[STORAGE],
        request.app[SETTINGS].base_url,
        body.partner,
        timedelta(seconds=body.ttl_seconds),
    )
    out = PortalLinkOut(url=url, partner=body.partner, expires_at=format_time(expires_at))
    return model_response(out, status=201)
