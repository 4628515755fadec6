"""Signing in and out of the portal: with a token (partner or operator), or with a
single-use link an operator made for a partner.

Opening a link shows a button and spends nothing: link previews and mail scanners
fetch URLs, and must not use up (or use) a sign-in meant for a person. The button's
POST spends it. Both ways are rate limited per client address.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from syndicate.core.rate import RateLimiter
from syndicate.web.appkeys import STORAGE
from syndicate.web.auth import hash_token
from syndicate.web.limits import client_key
from syndicate.web.portal.render import notice_from, page, see_other
from syndicate.web.portal.session import end_session, read_form, require, signed_in, start_session

routes = web.RouteTableDef()
#: Sign-in attempts per client address: a burst of 10, then one every 6 s.
SIGN_IN_RATE: Final = 10 / 60
SIGN_IN_BURST: Final = 10
SIGN_IN_LIMITER = web.AppKey("portal_sign_in_limiter", RateLimiter)
_NOTICES: Final = {
    "signed-out": "You are signed out.",
    "expired": "Your session has ended; sign in again.",
}


def _next(target: str | None) -> str:
    """Where to go after signing in: a portal path, never another site."""
    if target and target.startswith("/portal/") and not target.startswith("//"):
        if "\\" not in target and all(c.isprintable() for c in target):
            return target
    return "/portal/"


def _too_many(request: web.Request) -> tuple[str, dict[str, str]] | None:
    """When this client has tried to sign in too often: what to say, and the
    ``Retry-After`` header; else None."""
    wait = request.app[SIGN_IN_LIMITER].take(client_key(request))
    if wait is None:
        return None
    seconds = max(1, int(wait + 0.999))
    message = f"Too many sign-in attempts from your address; try again in {seconds} s."
    return message, {"Retry-After": str(seconds)}


@routes.get("/portal")
@routes.get("/portal/")
async def home(request: web.Request) -> web.Response:
    viewer = await require(request, "partner", "operator")
    return see_other("/portal/dashboard" if viewer.is_operator else "/portal/endpoints")


@routes.get("/portal/sign-in")
async def sign_in_form(request: web.Request) -> web.Response:
    if await signed_in(request) is not None:
        return see_other(_next(request.query.get("next")))
    return page(
        request,
        "sign_in.html",
        next=_next(request.query.get("next")),
        errors={},
        notice=notice_from(request, _NOTICES),
    )


@routes.post("/portal/sign-in")
async def sign_in(request: web.Request) -> web.Response:
    form = await read_form(request, write=False)
    target = _next(form.get("next"))

    def again(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return page(
            request,
            "sign_in.html",
            status=status,
            headers=headers,
            next=target,
            errors={"token": message},
        )

    limited = _too_many(request)
    if limited is not None:
        return again(429, *limited)
    secret = form.get("token", "").strip()
    if not secret:
        return again(422, "Enter your API token (it starts with syn_).")
    token = await request.app[STORAGE].get_token_by_hash(hash_token(secret))
    if token is None:
        return again(401, "This token is not valid: it may have been revoked or mistyped.")
    response = see_other(target)
    await start_session(request, response, token)
    return response


@routes.get("/portal/link/{secret}")
async def link_form(request: web.Request) -> web.Response:
    await signed_in(request)  # a signed-in browser's form carries its session's token
    return page(request, "link.html", link=request.match_info["secret"], error=None)


@routes.post("/portal/link")
async def use_link(request: web.Request) -> web.Response:
    form = await read_form(request, write=False)
    secret = form.get("link", "")
    limited = _too_many(request)
    if limited is not None:
        message, headers = limited
        return page(request, "link.html", status=429, headers=headers, link=secret, error=message)
    token = None
    if secret and len(secret) <= 128:
        token = await request.app[STORAGE].use_portal_link(hash_token(secret))
    if token is None:
        message = (
            "This sign-in link has expired or was already used. Ask your operator for a "
            "new one, or sign in with your API token."
        )
        return page(request, "link.html", status=410, link=None, error=message)
    response = see_other("/portal/")
    await start_session(request, response, token)
    return response


@routes.post("/portal/sign-out")
async def sign_out(request: web.Request) -> web.Response:
    await read_form(request, write=False)  # signing out is never refused a rate
    response = see_other("/portal/sign-in", notice="signed-out")
    await end_session(request, response)
    return response
