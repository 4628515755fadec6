"""Partners' subscriptions and deliveries API. Partners see only their own;
operators see and manage all."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from aiohttp import web

from storage import DeliveryNotFound, SubscriptionNotFound
from storage.records import Delivery, Subscription, Token, format_time, utcnow
from syndicate.content.models import RecoverIn, SubscriptionIn, SubscriptionPatch
from syndicate.content.validation import invalid, validate
from syndicate.core.errors import Problem
from syndicate.core.settings import MAX_PAGE_SIZE
from syndicate.delivery import webhooks
from syndicate.delivery.egress import EgressRefused, check_url
from syndicate.delivery.webhooks import signed_request
from syndicate.delivery.webhooks import new_subscription_id
from syndicate.web.appkeys import DELIVERY, SETTINGS, STORAGE
from syndicate.web.auth import authenticate
from syndicate.web.problems import json_response
from syndicate.web.requests import query_param, read_json

routes = web.RouteTableDef()
DELIVERY_STATUSES = ("pending", "delivered", "failed", "dead")


def _t(value: Any) -> str | None:
    return format_time(value) if value is not None else None


def subscription_json(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "kind": sub.kind,
        "url": sub.url,
        "topics": list(sub.topics),
        "events": list(sub.events),
        "description": sub.description,
        "status": sub.status,
        "owner": sub.owner,
        "created_at": _t(sub.created_at),
        "updated_at": _t(sub.updated_at),
        "last_success_at": _t(sub.last_success_at),
        "failing_since": _t(sub.failing_since),
        "previous_secret_expires_at": _t(sub.previous_secret_expires_at),
    }


def delivery_json(delivery: Delivery, message_id: str) -> dict[str, Any]:
    """``message_id``: the delivery's event's id (``Storage.get_event_ids``)."""
    return {
        "id": delivery.id,
        "message_id": message_id,
        "event_seq": delivery.event_seq,
        "subscription_id": delivery.subscription_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": _t(delivery.next_attempt_at)
        if delivery.status in ("pending", "failed")
        else None,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "last_response_body": delivery.last_response_body,
        "last_latency_ms": delivery.last_latency_ms,
        "delivered_at": _t(delivery.delivered_at),
        "created_at": _t(delivery.created_at),
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


@routes.post("/api/subscriptions")
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
    return json_response(
        {**subscription_json(sub), "secret": secret},
        status=201,
        headers={"Location": f"/api/subscriptions/{sub.id}"},
    )


@routes.get("/api/subscriptions")
async def list_subscriptions(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    limit = _limit(request)
    owner = None if token.role == "operator" else token.name
    subs = await request.app[STORAGE].list_subscriptions(
        owner=owner, kind="webhook", limit=limit + 1, after_id=query_param(request, "cursor")
    )
    next_cursor = subs[limit - 1].id if len(subs) > limit else None
    return json_response(
        {"subscriptions": [subscription_json(s) for s in subs[:limit]], "next_cursor": next_cursor}
    )


@routes.get("/api/subscriptions/{id}")
async def get_subscription(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    return json_response(subscription_json(await _owned(request, token)))


@routes.patch("/api/subscriptions/{id}")
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
    return json_response(subscription_json(updated))


@routes.delete("/api/subscriptions/{id}")
async def delete_subscription(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    await request.app[STORAGE].delete_subscription(sub.id)
    return web.Response(status=204)


@routes.post("/api/subscriptions/{id}/rotate-secret")
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
    return json_response({**subscription_json(updated), "secret": secret})


@routes.post("/api/subscriptions/{id}/test")
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
    return json_response(
        {
            "delivered": attempt.ok,
            "message_id": msg_id,
            "status_code": attempt.status,
            "latency_ms": attempt.latency_ms,
            "error": attempt.error,
        }
    )


def _limit(request: web.Request) -> int:
    raw = query_param(request, "limit") or "50"
    try:
        limit = int(raw)
    except ValueError:
        raise invalid("limit", f"{raw!r} is not a whole number") from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise invalid("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
    return limit


@routes.get("/api/subscriptions/{id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    status = query_param(request, "status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise invalid("status", f"must be one of {', '.join(DELIVERY_STATUSES)}")
    limit = _limit(request)
    before = None
    cursor = query_param(request, "cursor")
    if cursor is not None:
        try:
            before = int(cursor)
        except ValueError:
            raise invalid("cursor", "not a cursor this service issued") from None
    page = await request.app[STORAGE].list_deliveries(
        sub.id,
        status=status,  # type: ignore[arg-type]  # checked against DELIVERY_STATUSES above
        limit=limit + 1,
        before_id=before,
    )
    next_cursor = str(page[limit - 1].id) if len(page) > limit else None
    page = page[:limit]
    ids = await request.app[STORAGE].get_event_ids(sorted({d.event_seq for d in page}))
    return json_response(
        {
            "deliveries": [delivery_json(d, ids[d.event_seq]) for d in page],
            "next_cursor": next_cursor,
        }
    )


@routes.post("/api/subscriptions/{id}/deliveries/{delivery_id}/retry")
async def retry_delivery(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    raw = request.match_info["delivery_id"]
    storage = request.app[STORAGE]
    not_found = Problem(404, f"no delivery {raw!r} for subscription {sub.id!r}")
    if not raw.isdigit():
        raise not_found
    try:
        delivery = await storage.get_delivery(int(raw))
    except DeliveryNotFound:
        raise not_found from None
    if delivery.subscription_id != sub.id:
        raise not_found
    delivery = await storage.retry_delivery(delivery.id)
    request.app[DELIVERY].dispatcher.wake()
    ids = await storage.get_event_ids([delivery.event_seq])
    return json_response(delivery_json(delivery, ids[delivery.event_seq]), status=202)


@routes.post("/api/subscriptions/{id}/recover")
async def recover(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    sub = await _owned(request, token)
    body = validate(RecoverIn, await read_json(request))
    count = await request.app[STORAGE].recover_deliveries(sub.id, since=body.since)
    request.app[DELIVERY].dispatcher.wake()
    return json_response({"recovered": count, "since": format_time(body.since)}, status=202)
