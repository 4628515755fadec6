"""The aiohttp application: ``create_app(settings, *, storage=None)``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from storage import Storage, open_storage

from . import api_articles, api_subscriptions, feed_http, health, metrics, openapi, pages, websub
from .delivery import DeliveryService
from .keys import DELIVERY, SETTINGS, STORAGE
from .limits import RATE_LIMITER, RateLimiter
from .logs import request_middleware
from .problems import error_response
from .settings import Settings


def create_app(settings: Settings, *, storage: Storage | None = None) -> web.Application:
    """Build the app. With ``storage`` given the caller owns it (and closes it);
    otherwise the app opens ``settings.database`` on startup and closes it on cleanup.
    The delivery fan-out and dispatcher run as background tasks of the app."""
    app = web.Application(
        client_max_size=settings.max_body_size,
        middlewares=[request_middleware(error_response)],
    )
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
    app.add_routes(health.routes)
    app.add_routes(metrics.routes)
    app.add_routes(api_articles.routes)
    app.add_routes(api_subscriptions.routes)
    app.add_routes(feed_http.routes)
    app.add_routes(pages.routes)
    app.add_routes(websub.routes)
    app[openapi.OPENAPI] = openapi.document_bytes(settings)
    app.add_routes(openapi.routes)
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
