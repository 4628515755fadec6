"""Partners' subscriptions and deliveries API. Partners see only their own;
operators see and manage all."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from storage.records import Subscription, Token, format_time
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
from syndicate.core.names import DELIVERY_STATUSES, DeliveryStatus
from syndicate.core.settings import MAX_PAGE_SIZE
from syndicate.web import subscriptionops as ops
from syndicate.web.appkeys import STORAGE
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


async def _owned(request: web.Request, token: Token) -> Subscription:
    """The subscription in the path, if this token may see it (404 otherwise)."""
    return await ops.owned(request.app, request.match_info["id"], token)


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
    sub, secret = await ops.create(request.app, token, body)
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
        owner=owner,
        kind="webhook",
        limit=limit + 1,
        after_id=ops.listing_cursor(query_param(request, "cursor")),
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
    return model_response(SubscriptionOut.of(await ops.patch(request.app, sub, body)))


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
    await ops.delete(request.app, sub)
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
    updated, secret = await ops.rotate_secret(request.app, sub)
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
    return model_response(await ops.send_ping(request.app, sub))


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
        before = ops.row_id(cursor)
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
    delivery = await ops.owned_delivery(request.app, sub, request.match_info["delivery_id"])
    delivery = await ops.retry(request.app, delivery)
    ids = await request.app[STORAGE].get_event_ids([delivery.event_seq])
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
    count = await ops.recover(request.app, sub, body.since)
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
    status = await ops.status(request.app, sub)
    sub = status.subscription
    return model_response(
        SubscriptionStatusOut(
            id=sub.id,
            state=sub.status,
            failing_since=_time(sub.failing_since),
            last_success_at=_time(sub.last_success_at),
            next_attempt_at=_time(status.next_attempt_at),
            last_day=DayStatsOut.of(status.last_day),
            recent_attempts=[AttemptOut.of(a) for a in status.recent],
        )
    )


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value else None
