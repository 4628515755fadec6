"""The operator's token pages: every token, a form that makes one (its secret shown
once, on the answer to the form: never in a URL, never again), and revoking one.

Revoking a token ends its portal sessions and unused sign-in links with it (the
storage does both in one transaction), so a partner signed in with it is signed out
at its next page. Revoking the token one's own session acts as asks once more: the
confirm page says so, and the form must carry its ``own`` field.
"""

from __future__ import annotations

from typing import Final, cast
from urllib.parse import quote

from aiohttp import web

import storage as storage_pkg
from storage.records import Role, Token
from syndicate.core.errors import Problem
from syndicate.core.names import TOKEN_NAME, TOKEN_NAME_RULE
from syndicate.web.appkeys import STORAGE
from syndicate.web.auth import create_token
from syndicate.web.portal.render import notice_from, page, see_other
from syndicate.web.portal.session import Viewer, end_session, read_form, require

routes = web.RouteTableDef()
ROLES: Final[tuple[Role, ...]] = ("partner", "operator")
_NOTICES: Final = {"revoked": "The token was revoked; its sessions are signed out."}
#: The value of the revoke form's ``own`` field on the page that warns about it.
_OWN_CONFIRMED: Final = "yes"


def _tokens_page(
    request: web.Request,
    tokens: list[Token],
    *,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    created: tuple[str, Token] | None = None,
) -> web.Response:
    return page(
        request,
        "tokens.html",
        status=status,
        nav="tokens",
        tokens=tokens,
        values=values or {"name": "", "role": "partner"},
        errors=errors or {},
        roles=ROLES,
        name_rule=TOKEN_NAME_RULE,
        created=created,
        notice=notice_from(request, _NOTICES),
        quote=lambda value: quote(value, safe=""),
    )


@routes.get("/portal/tokens")
async def tokens(request: web.Request) -> web.Response:
    await require(request, "operator")
    return _tokens_page(request, await request.app[STORAGE].list_tokens())


def _form_errors(name: str, role: str) -> dict[str, str]:
    errors = {}
    if TOKEN_NAME.fullmatch(name) is None:
        errors["name"] = f"Not a token name: {TOKEN_NAME_RULE}."
    if role not in ROLES:
        errors["role"] = "Choose partner or operator."
    return errors


@routes.post("/portal/tokens")
async def create(request: web.Request) -> web.Response:
    await require(request, "operator")
    form = await read_form(request)
    storage = request.app[STORAGE]
    values = {"name": form.get("name", ""), "role": form.get("role", "")}
    name, role = values["name"].strip(), values["role"]
    errors = _form_errors(name, role)
    status = 422
    if not errors:
        try:
            secret, token = await create_token(storage, name=name, role=cast(Role, role))
        except storage_pkg.TokenExists:
            errors["name"] = f"A live token is named {name!r} already: choose another name."
            status = 409
        except storage_pkg.TokenNameKeepsRole as exc:
            errors["name"] = (
                f"{name!r} was the name of a revoked {exc.role} token (its subscriptions "
                f"keep the name): choose another name, or make it a {exc.role} token."
            )
            status = 409
        else:
            return _tokens_page(request, await storage.list_tokens(), created=(secret, token))
    return _tokens_page(
        request, await storage.list_tokens(), status=status, values=values, errors=errors
    )


async def _live(request: web.Request) -> Token:
    name = request.match_info["name"]
    token = await request.app[STORAGE].get_live_token(name)
    if token is None:
        raise Problem(404, f"no live token named {name!r}")
    return token


async def _last_operator(request: web.Request, token: Token) -> bool:
    """Is ``token`` the only live operator token? (Then only the CLI makes another.)"""
    if token.role != "operator":
        return False
    live = [t for t in await request.app[STORAGE].list_tokens() if t.revoked_at is None]
    return [t.id for t in live if t.role == "operator"] == [token.id]


async def _confirm(
    request: web.Request, viewer: Viewer, token: Token, *, status: int = 200
) -> web.Response:
    return page(
        request,
        "token_revoke.html",
        status=status,
        nav="tokens",
        token=token,
        own=token.id == viewer.token.id,
        own_confirmed=_OWN_CONFIRMED,
        last_operator=await _last_operator(request, token),
        action=f"/portal/tokens/{quote(token.name, safe='')}/revoke",
    )


@routes.get("/portal/tokens/{name}/revoke")
async def confirm_revoke(request: web.Request) -> web.Response:
    viewer = await require(request, "operator")
    return await _confirm(request, viewer, await _live(request))


@routes.post("/portal/tokens/{name}/revoke")
async def revoke(request: web.Request) -> web.Response:
    viewer = await require(request, "operator")
    form = await read_form(request)
    token = await _live(request)
    own = token.id == viewer.token.id
    if own and form.get("own") != _OWN_CONFIRMED:
        # Not from the page that warned about it: warn now, revoke nothing.
        return await _confirm(request, viewer, token, status=409)
    await request.app[STORAGE].revoke_token(token.name)
    if own:
        response = see_other("/portal/sign-in", notice="expired")
        await end_session(request, response)
        return response
    return see_other("/portal/tokens", notice="revoked")
