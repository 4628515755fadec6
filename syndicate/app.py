"""The aiohttp application: ``create_app(settings, *, storage=None)``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from aiohttp import web

from storage import Storage, open_storage

from . import api_articles, api_subscriptions, feed_http, health, metrics, openapi, pages, websub
from .delivery import DeliveryService
from .keys import DELIVERY, SETTINGS, STORAGE
from .limits import RATE_LIMITER, RateLimiter
from .logs import served
from .problems import error_response
from .settings import Settings


def create_app(settings: Settings, *, storage: Storage | None = None) -> web.Application:
    """Build the app. With ``storage`` given the caller owns it (and closes it);
    otherwise the app opens ``settings.database`` on startup and closes it on cleanup.
    The delivery fan-out and dispatcher run as background tasks of the app."""
    app = web.Application(client_max_size=settings.max_body_size)
    app[SETTINGS] = settings
    app[feed_http.FEED_CACHE] = feed_http.FeedCache()
    app[metrics.METRICS] = metrics.Metrics()
    app[RATE_LIMITER] = RateLimiter(settings.write_rate, settings.write_burst)
    if storage is not None:
        app[STORAGE] = storage
    else:
        app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_delivery_ctx)
    app.cleanup_ctx.append(websub.hub_ctx)
    tables = [health, metrics, api_articles, api_subscriptions, feed_http, pages, websub, openapi]
    app[openapi.OPENAPI] = openapi.document_bytes(settings)
    for module in tables:
        app.add_routes(_served(module.routes))
    feed_http.add_feed_route(app, served(feed_http.feed, error_response))
    app.add_routes(_served([web.route("*", "/{path:.*}", no_route)]))  # last: only the unmatched
    return app


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = await open_storage(
        settings.database, pool_min=settings.db_pool_min, pool_max=settings.db_pool_max
    )
    app[STORAGE] = store
    try:
        yield
    finally:
        await store.close()


async def _delivery_ctx(app: web.Application) -> AsyncIterator[None]:
    service = DeliveryService(app[STORAGE], app[SETTINGS], metrics=app[metrics.METRICS])
    app[DELIVERY] = service
    await service.start()
    service.notify()
    try:
        yield
    finally:
        await service.stop()


def _served(table: Iterable[web.AbstractRouteDef]) -> list[web.AbstractRouteDef]:
    """Each route's handler wrapped by ``logs.served``: request id, problem+json for
    errors, ``nosniff`` (the service's middleware, without aiohttp's middleware layers)."""
    wrapped: list[web.AbstractRouteDef] = []
    for route in table:
        assert isinstance(route, web.RouteDef), route
        handler = served(route.handler, error_response)
        wrapped.append(web.RouteDef(route.method, route.path, handler, route.kwargs))
    return wrapped


async def no_route(request: web.Request) -> web.StreamResponse:
    """What no route matched: 405 with ``Allow`` when the path exists under other
    methods, else 404 (both answered as problem+json by ``served``)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
