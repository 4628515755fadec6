"""``GET /metrics``: Prometheus metrics (the registry is delivery.metrics)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from storage import StorageError
from storage.records import utcnow
from syndicate.delivery.metrics import Metrics
from syndicate.web.appkeys import STORAGE

METRICS = web.AppKey("metrics", Metrics)
routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    now = utcnow()
    try:
        stats = await request.app[STORAGE].delivery_stats(now=now)
    except StorageError:
        pass  # the queue gauges keep their last values; the rest is still useful
    else:
        registry.pending.set(stats.pending)
        registry.due.set(stats.due)
        age = (now - stats.oldest_pending_at).total_seconds() if stats.oldest_pending_at else 0
        registry.oldest_pending_age.set(max(0.0, age))
    return web.Response(
        body=generate_latest(registry.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST, "X-Content-Type-Options": "nosniff"},
    )
