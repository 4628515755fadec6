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

from aiohttp import web

from syndicate.core.rate import RateLimiter
from syndicate.web.middleware import served
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
    """Add the portal's routes (each answered through ``served`` with HTML errors)."""
    app[signin.SIGN_IN_LIMITER] = RateLimiter(signin.SIGN_IN_RATE, signin.SIGN_IN_BURST)
    routes = [web.get(render.STYLESHEET_PATH, render.stylesheet)]
    for table in TABLES:
        for route in table:
            assert isinstance(route, web.RouteDef), route
            routes.append(web.RouteDef(route.method, route.path, route.handler, route.kwargs))
    app.add_routes(
        [
            web.RouteDef(r.method, r.path, served(r.handler, render.error_page), r.kwargs)
            for r in routes
            if isinstance(r, web.RouteDef)
        ]
    )
