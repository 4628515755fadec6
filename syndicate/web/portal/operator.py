"""The operator's pages of the portal: the delivery-health dashboard and every
subscription. Articles and topics are in ``operator_articles``, tokens in
``operator_tokens``; the dashboard's chart is drawn by ``charts``."""

from __future__ import annotations

from datetime import timedelta
from typing import Final
from urllib.parse import urlencode

from aiohttp import web

from storage.records import Subscription, SubscriptionKind, utcnow
from syndicate.web import subscriptionops as ops
from syndicate.web.appkeys import STORAGE
from syndicate.web.portal.charts import attempts_chart, series, tally, window_start
from syndicate.web.portal.render import page
from syndicate.web.portal.session import require

routes = web.RouteTableDef()
#: The dashboard's chart: one bar a minute over the last hour.
BUCKET_SECONDS: Final = 60
BUCKETS: Final = 60
FAILING_SHOWN: Final = 20
SUBSCRIPTIONS_PAGE: Final = 50
_KINDS: Final[dict[str, SubscriptionKind]] = {"webhook": "webhook", "websub": "websub"}


def state_of(sub: Subscription) -> str:
    """What a subscription is doing now, as ``/hub/status`` says it."""
    return sub.state_at(utcnow())


def hub_status_url(sub: Subscription) -> str:
    """The public status page of a WebSub subscription's (topic, callback) pair."""
    query = urlencode({"hub.topic": sub.topic_url or "", "hub.callback": sub.url})
    return f"/hub/status?{query}"


@routes.get("/portal/dashboard")
async def dashboard(request: web.Request) -> web.Response:
    await require(request, "operator")
    storage = request.app[STORAGE]
    now = utcnow()
    start = window_start(now, bucket_seconds=BUCKET_SECONDS, buckets=BUCKETS)
    counts = await storage.count_attempts(since=start, bucket_seconds=BUCKET_SECONDS)
    buckets = tally(counts, start=start, bucket_seconds=BUCKET_SECONDS, buckets=BUCKETS)
    stats = await storage.delivery_stats(now=now)
    oldest_age = now - stats.oldest_pending_at if stats.oldest_pending_at else None
    return page(
        request,
        "dashboard.html",
        nav="dashboard",
        chart=attempts_chart(buckets, title="Delivery attempts per minute, last hour"),
        outcomes=series(buckets),
        busy=[b for b in buckets if b.total],
        attempts=sum(b.total for b in buckets),
        stats=stats,
        oldest_age=_age(oldest_age),
        failing=await storage.list_failing_subscriptions(limit=FAILING_SHOWN),
        failing_shown=FAILING_SHOWN,
        workers=await storage.list_workers(now=now),
        state_of=state_of,
        hub_status_url=hub_status_url,
    )


def _age(age: timedelta | None) -> str | None:
    """A wait as people say it: "3 min 20 s", "2 h 5 min", "4 d 3 h"."""
    if age is None:
        return None
    seconds = max(0, int(age.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


@routes.get("/portal/subscriptions")
async def subscriptions(request: web.Request) -> web.Response:
    await require(request, "operator")
    raw_kind = request.query.get("kind", "")
    cursor = ops.listing_cursor(request.query.get("cursor") or None)
    errors = {}
    kind = _KINDS.get(raw_kind)
    if raw_kind and kind is None:
        errors["kind"] = "choose webhook, WebSub or both"
    rows: list[Subscription] = []
    if not errors:
        rows = await request.app[STORAGE].list_subscriptions(
            kind=kind, limit=SUBSCRIPTIONS_PAGE + 1, after_id=cursor
        )
    next_url = None
    if len(rows) > SUBSCRIPTIONS_PAGE:
        rows = rows[:SUBSCRIPTIONS_PAGE]
        query = {"cursor": rows[-1].id, **({"kind": raw_kind} if raw_kind else {})}
        next_url = f"/portal/subscriptions?{urlencode(query)}"
    return page(
        request,
        "subscriptions.html",
        status=422 if errors else 200,
        nav="subscriptions",
        kind=raw_kind,
        errors=errors,
        subscriptions=rows,
        next_url=next_url,
        first_url="/portal/subscriptions" + (f"?{urlencode({'kind': raw_kind})}" if kind else ""),
        paged=cursor is not None,
        state_of=state_of,
        hub_status_url=hub_status_url,
    )
