"""Partners' subscriptions and deliveries API. Partners see only their own;
operators see and manage all."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from aiohttp import web

from storage import DeliveryNotFound, SubscriptionNotFound
from storage.records import Subscription, Token, format_time, utcnow
from syndicate.content.models import RecoverIn, SubscriptionIn, SubscriptionPatch
from syndicate.content.responses import (
    AttemptOut,
    DayStatsOut,
    DeliveryList,
    DeliveryOut,
    PingResult,
    RecoverResult,
    SubscriptionList,
    SubscriptionOut,
    SubscriptionStatusOut,
    SubscriptionWithSecret,
)
from syndicate.content.validation import invalid, validate
from syndicate.core.errors import Problem
from syndicate.core.names import DELIVERY_STATUSES, DeliveryStatus
from syndicate.core.settings import MAX_PAGE_SIZE
from syndicate.delivery import webhooks
from syndicate.delivery.egress import EgressRefused, check_url
from syndicate.delivery.webhooks import new_subscription_id, signed_request
from syndicate.web.appkeys import DELIVERY, SETTINGS, STORAGE
from syndicate.web.auth import authenticate
from syndicate.web.operations import (
    ANY_TOKEN,
    PAGE,
    WRITE_ERRORS,
    ApiRoutes,
    model_response,
)
from syndicate.web.requests import query_param, read_json

routes = ApiRoutes()
#: What a status page shows: the last RECENT_ATTEMPTS attempts, and statistics over
#: the last STATS_WINDOW, of at most STATS_MAX_ATTEMPTS attempts (the latest).
RECENT_ATTEMPTS = 20
STATS_WINDOW = timedelta(days=1)
STATS_MAX_ATTEMPTS = 10_000
#: Delivery ids are 64-bit database integers: past this, no row (and no cursor) can be.
MAX_ROW_ID = 2**63 - 1


def _row_id(text: str) -> int | None:
    """A delivery id (or cursor) as we issue them: ASCII digits within 64 bits."""
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_ROW_ID else None


#: What an answer naming a subscription links to: every operation on it.
_SUBSCRIPTION_LINKS = {
    path: {"id": "$response.body#/id"}
    for path in (
        "/api/subscriptions/{id}",
        "/api/subscriptions/{id}/rotate-secret",
        "/api/subscriptions/{id}/test",
        "/api/subscriptions/{id}/deliveries",
        "/api/subscriptions/{id}/recover",
        "/api/subscriptions/{id}/status",
    )
}
_RETRY_LINK = {
    "/api/subscriptions/{id}/deliveries/{delivery_id}/retry": {
        "id": "$request.path.id",
        "delivery_id": "$response.body#/deliveries/0/id",
    }
}


async def _check_target(request: web.Request, url: str) -> None:
    allow = request.app[SETTINGS].allow_private_targets
    try:
        await check_url(url, allow_private=allow)
    except EgressRefused as exc:
        raise invalid("url", str(exc)) from None


async def _owned(request: web.Request, token: Token) -> Subscription:
    """The subscription in the path, if this token may see it (404 otherwise)."""
    subscription_id = request.match_info["id"]
    try:
        sub = await request.app[STORAGE].get_subscription(subscription_id)
    except SubscriptionNotFound:
        raise Problem(404, f"no subscription {subscription_id!r}") from None
    if sub.kind != "webhook" or (token.role != "operator" and sub.owner != token.name):
        raise Problem(404, f"no subscription {subscription_id!r}")
    return sub


@routes.operation(
    "post",
    "/api/subscriptions",
    "Subscribe a webhook",
    ANY_TOKEN,
    {201: SubscriptionWithSecret},
    body=SubscriptionIn,
    errors=(*WRITE_ERRORS, 409),
    links=_SUBSCRIPTION_LINKS,
)
async def create_subscription(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    body = validate(SubscriptionIn, await read_json(request))
    await _check_target(request, body.url)
    limit = request.app[SETTINGS].max_subscriptions
    if token.role != "operator":
        owned = await request.app[STORAGE].list_subscriptions(
            owner=token.name, kind="webhook", limit=limit
        )
        if len(owned) >= limit:
            raise Problem(409, f"a partner may hold at most {limit} subscriptions")
    secret = webhooks.new_secret()
    sub = await request.app[STORAGE].create_subscription(
        id=new_subscription_id(),
        kind="webhook",
        url=body.url,
        topics=body.topics,
        events=body.events or [],
        secret=secret,
        owner=token.name,
        description=body.description,
    )
    return model_response(
        SubscriptionWithSecret.with_secret(sub, secret),
        status=201,
        headers={"Location": f"/api/subscriptions/{sub.id}"},
    )


@routes.operation(
    "get",
    "/api/subscriptions",
    "List subscriptions",
    ANY_TOKEN,
    {200: SubscriptionList},
    query=PAGE,
    errors=(401, 422),
)
async def list_subscriptions(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    limit = _limit(request)
    owner = None if token.role == "operator" else token.name
    subs = await request.app[STORAGE].list_subscriptions(
        owner=owner, kind="webhook", limit=limit + 1, after_id=query_param(request, "cursor")
    )
    next_cursor = subs[limit - 1].id if len(subs) > limit else None
    listed = [SubscriptionOut.of(s) for s in subs[:limit]]
    return model_response(SubscriptionList(subscriptions=listed, next_cursor=next_cursor))


@routes.operation(
    "get",
    "/api/subscriptions/{id}",
    "Read a subscription",
    ANY_TOKEN,
    {200: SubscriptionOut},
    errors=(401, 404),
)
async def get_subscription(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    return model_response(SubscriptionOut.of(await _owned(request, token)))


@routes.operation(
    "patch",
    "/api/subscriptions/{id}",
    "Change a subscription",
    ANY_TOKEN,
    {200: SubscriptionOut},
    body=SubscriptionPatch,
    errors=(*WRITE_ERRORS, 404),
)
async def patch_subscription(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    body = validate(SubscriptionPatch, await read_json(request))
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude_none=True)
    if "url" in changes:
        await _check_target(request, changes["url"])
    if changes.get("status") == "active" and sub.status != "active":
        changes["failing_since"] = None
    if "events" in body.model_fields_set and body.events is None:
        changes["events"] = []
    updated = await request.app[STORAGE].update_subscription(sub.id, changes)
    return model_response(SubscriptionOut.of(updated))


@routes.operation(
    "delete",
    "/api/subscriptions/{id}",
    "Remove a subscription",
    ANY_TOKEN,
    {204: None},
    errors=(401, 404, 429),
)
async def delete_subscription(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    await request.app[STORAGE].delete_subscription(sub.id)
    return web.Response(status=204)


@routes.operation(
    "post",
    "/api/subscriptions/{id}/rotate-secret",
    "Rotate the signing secret",
    ANY_TOKEN,
    {200: SubscriptionWithSecret},
    errors=(401, 404, 429),
)
async def rotate_secret(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    secret = webhooks.new_secret()
    grace = timedelta(seconds=request.app[SETTINGS].secret_grace)
    updated = await request.app[STORAGE].update_subscription(
        sub.id,
        {
            "secret": secret,
            "previous_secret": sub.secret,
            "previous_secret_expires_at": utcnow() + grace,
        },
    )
    return model_response(SubscriptionWithSecret.with_secret(updated, secret))


@routes.operation(
    "post",
    "/api/subscriptions/{id}/test",
    "Send a signed ping now",
    ANY_TOKEN,
    {200: PingResult},
    errors=(401, 404, 429),
)
async def test_subscription(request: web.Request) -> web.Response:
    """Send a signed ``ping`` now and report what the endpoint answered."""
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    now = utcnow()
    msg_id = f"msg_ping_{secrets.token_hex(8)}"
    body = webhooks.encode(
        {"type": "ping", "timestamp": format_time(now), "data": {"subscription_id": sub.id}}
    )
    attempt = await request.app[DELIVERY].sender.send(signed_request(sub, msg_id, body, now))
    return model_response(
        PingResult(
            delivered=attempt.ok,
            message_id=msg_id,
            status_code=attempt.status,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
        )
    )


def _status(value: str | None) -> DeliveryStatus | None:
    for status in DELIVERY_STATUSES:
        if value == status:
            return status
    if value is not None:
        raise invalid("status", f"must be one of {', '.join(DELIVERY_STATUSES)}")
    return None


def _limit(request: web.Request) -> int:
    raw = query_param(request, "limit") or "50"
    try:
        limit = int(raw)
    except ValueError:
        raise invalid("limit", f"{raw!r} is not a whole number") from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise invalid("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
    return limit


@routes.operation(
    "get",
    "/api/subscriptions/{id}/deliveries",
    "The delivery log",
    ANY_TOKEN,
    {200: DeliveryList},
    query={"status": {"type": "string", "enum": list(DELIVERY_STATUSES)}, **PAGE},
    errors=(401, 404, 422),
    links=_RETRY_LINK,
)
async def list_deliveries(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    status = _status(query_param(request, "status"))
    limit = _limit(request)
    before = None
    cursor = query_param(request, "cursor")
    if cursor is not None:
        before = _row_id(cursor)
        if before is None:
            raise invalid("cursor", "not a cursor this service issued")
    page = await request.app[STORAGE].list_deliveries(
        sub.id,
        status=status,
        limit=limit + 1,
        before_id=before,
    )
    next_cursor = str(page[limit - 1].id) if len(page) > limit else None
    page = page[:limit]
    ids = await request.app[STORAGE].get_event_ids(sorted({d.event_seq for d in page}))
    listed = [DeliveryOut.of(d, ids[d.event_seq]) for d in page]
    return model_response(DeliveryList(deliveries=listed, next_cursor=next_cursor))


@routes.operation(
    "post",
    "/api/subscriptions/{id}/deliveries/{delivery_id}/retry",
    "Retry one delivery now",
    ANY_TOKEN,
    {202: DeliveryOut},
    errors=(401, 404, 429),
)
async def retry_delivery(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    raw = request.match_info["delivery_id"]
    storage = request.app[STORAGE]
    not_found = Problem(404, f"no delivery {raw!r} for subscription {sub.id!r}")
    delivery_id = _row_id(raw)
    if delivery_id is None:
        raise not_found
    try:
        delivery = await storage.get_delivery(delivery_id)
    except DeliveryNotFound:
        raise not_found from None
    if delivery.subscription_id != sub.id:
        raise not_found
    delivery = await storage.retry_delivery(delivery.id)
    request.app[DELIVERY].dispatcher.wake()
    ids = await storage.get_event_ids([delivery.event_seq])
    return model_response(DeliveryOut.of(delivery, ids[delivery.event_seq]), status=202)


@routes.operation(
    "post",
    "/api/subscriptions/{id}/recover",
    "Retry failed deliveries since a time",
    ANY_TOKEN,
    {202: RecoverResult},
    body=RecoverIn,
    errors=(*WRITE_ERRORS, 404),
)
async def recover(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    body = validate(RecoverIn, await read_json(request))
    count = await request.app[STORAGE].recover_deliveries(sub.id, since=body.since)
    request.app[DELIVERY].dispatcher.wake()
    return model_response(RecoverResult(recovered=count, since=format_time(body.since)), status=202)


@routes.operation(
    "get",
    "/api/subscriptions/{id}/status",
    "How a subscription is doing",
    ANY_TOKEN,
    {200: SubscriptionStatusOut},
    errors=(401, 404),
)
async def subscription_status(request: web.Request) -> web.Response:
    """State, failure window, next attempt, the last 20 attempts, and the success rate
    and p50/p99 latency of the last 24 hours (at most the latest 10,000 attempts)."""
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    storage = request.app[STORAGE]
    # The recent ones first, then the day's: an attempt recorded in between is then
    # counted in the day without being listed, never listed without being counted.
    recent = await storage.list_attempts(sub.id, limit=RECENT_ATTEMPTS)
    day = await storage.list_attempts(
        sub.id, since=utcnow() - STATS_WINDOW, limit=STATS_MAX_ATTEMPTS
    )
    next_attempt = await storage.next_attempt_at(sub.id)
    # Read again, after the attempts: an outcome recorded meanwhile is then in both
    # (its attempt and the failure window are written in one transaction).
    try:
        sub = await storage.get_subscription(sub.id)
    except SubscriptionNotFound:
        raise Problem(404, f"no subscription {sub.id!r}") from None
    return model_response(
        SubscriptionStatusOut(
            id=sub.id,
            state=sub.status,
            failing_since=format_time(sub.failing_since) if sub.failing_since else None,
            last_success_at=format_time(sub.last_success_at) if sub.last_success_at else None,
            next_attempt_at=format_time(next_attempt) if next_attempt else None,
            last_day=DayStatsOut.of(day),
            recent_attempts=[AttemptOut.of(a) for a in recent],
        )
    )
