"""The web portal: server-rendered pages for partners (their endpoints, secrets,
delivery log, replays) and operators (delivery health, articles, topics, tokens,
subscriptions), signed in with a session cookie. No script, one stylesheet.

    session   cookies, sessions, CSRF, who may see what
    render    templates, security headers, HTML error pages
    signin    sign-in with a token or a single-use link, sign-out
    links     making single-use links (the CLI and the JSON API)
    partner   the partner's pages            operator  the operator's pages
    partner_deliveries, partner_docs           (delivery log, attempts; catalogue, pull)
    operator_articles, operator_tokens         (articles and topics; tokens)
    charts    the dashboard's SVG chart
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from syndicate.content.validation import invalid
from syndicate.core.errors import Problem
from syndicate.core.rate import RateLimiter
from syndicate.web.middleware import Handler, served
from syndicate.web.portal import (
    operator,
    operator_articles,
    operator_tokens,
    partner,
    partner_deliveries,
    partner_docs,
    render,
    signin,
)

#: C0 controls but tab, line feed and carriage return (which handlers strip), and DEL.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TABLES: tuple[web.RouteTableDef, ...] = (
    signin.routes,
    partner.routes,
    partner_deliveries.routes,
    partner_docs.routes,
    operator.routes,
    operator_articles.routes,
    operator_tokens.routes,
)


def install(app: web.Application) -> None:
    """Add the portal's routes, each answered through ``served`` with HTML errors,
    behind ``_sane``."""
    app[signin.SIGN_IN_LIMITER] = RateLimiter(signin.SIGN_IN_RATE, signin.SIGN_IN_BURST)
    routes: list[web.RouteDef] = [
        web.RouteDef("GET", render.STYLESHEET_PATH, render.stylesheet, {})
    ]
    for table in TABLES:
        for route in table:
            assert isinstance(route, web.RouteDef), route
            routes.append(route)
    app.add_routes(
        [
            web.RouteDef(r.method, r.path, served(_sane(r.handler), render.error_page), r.kwargs)
            for r in routes
        ]
    )


def _sane(handler: Handler) -> Handler:
    """``handler``, for requests whose path parts and query values hold no control
    character (NUL, which PostgreSQL cannot store or compare, among them): a path
    with one names nothing here (404), a query value with one is refused naming it
    (422). Handlers then never send such text to the database."""

    async def answer(request: web.Request) -> web.StreamResponse:
        for value in request.match_info.values():
            if _CONTROL.search(value):
                raise Problem(404, "no such page")
        for name, value in request.query.items():
            if _CONTROL.search(name) or _CONTROL.search(value):
                raise invalid(name[:40], "must not hold control characters")
        return await handler(request)

    answer.__name__ = getattr(handler, "__name__", "handler")
    return answer
