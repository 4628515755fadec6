"""What can be done to a partner's webhook subscription, once: create, change,
rotate its secret, ping it, retry or recover its deliveries, read its status.

The JSON API (``routes.subscriptions``) and the portal's endpoint pages
(``portal.partner*``) both call these, so a form and an API call follow one set of
rules (the egress check, the per-partner limit, who may see what) and answer alike.
They take the application (its storage, settings and delivery service) and raise
``Problem`` as the JSON routes do; each caller renders the result its own way.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from aiohttp import web

from storage import DeliveryNotFound, SubscriptionNotFound
from storage.records import (
    Delivery,
    DeliveryAttempt,
    Subscription,
    Token,
    format_time,
    utcnow,
)
from syndicate.content.models import SubscriptionIn, SubscriptionPatch
from syndicate.content.responses import PingResult
from syndicate.content.validation import invalid
from syndicate.core.errors import Problem
from syndicate.delivery import webhooks
from syndicate.delivery.egress import EgressRefused, check_url
from syndicate.delivery.webhooks import new_subscription_id, signed_request
from syndicate.web.appkeys import DELIVERY, SETTINGS, STORAGE

#: What a status page shows: the last RECENT_ATTEMPTS attempts, and statistics over
#: the last STATS_WINDOW, of at most STATS_MAX_ATTEMPTS attempts (the latest).
RECENT_ATTEMPTS: Final = 20
STATS_WINDOW: Final = timedelta(days=1)
STATS_MAX_ATTEMPTS: Final = 10_000
#: Delivery ids are 64-bit database integers: past this, no row (and no cursor) can be.
MAX_ROW_ID: Final = 2**63 - 1
#: The event type of the test ping (``send_ping``): not in the change log.
PING: Final = "ping"


def row_id(text: str) -> int | None:
    """A delivery id (or cursor) as we issue them: ASCII digits within 64 bits (more
    than 19 digits are not even read: Python refuses to read 4,300)."""
    if not (len(text) <= 19 and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_ROW_ID else None


#: Subscription ids as ``webhooks.new_subscription_id`` makes them (with room to spare).
_SUBSCRIPTION_ID: Final = re.compile(r"sub_[0-9A-Za-z_-]{1,60}")


def valid_subscription_id(text: str) -> bool:
    """Could ``text`` be a subscription id (as a path part or a listing's cursor)?"""
    return _SUBSCRIPTION_ID.fullmatch(text) is not None


def listing_cursor(raw: str | None) -> str | None:
    """A subscription listing's ``cursor`` (the last id of the page before): 422 when
    it is not an id this service makes."""
    if raw is not None and not valid_subscription_id(raw):
        raise invalid("cursor", "not a cursor this service issued")
    return raw


async def owned(app: web.Application, subscription_id: str, token: Token) -> Subscription:
    """The webhook subscription, if ``token`` may see it: its owner's, or any for an
    operator. 404 otherwise (another partner's id reads as one that does not exist; an
    id of another shape is not looked up)."""
    shown = subscription_id if len(subscription_id) <= 40 else subscription_id[:40] + "…"
    not_found = Problem(404, f"no subscription {shown!r}")
    if not valid_subscription_id(subscription_id):
        raise not_found
    try:
        sub = await app[STORAGE].get_subscription(subscription_id)
    except SubscriptionNotFound:
        raise not_found from None
    if sub.kind != "webhook" or (token.role != "operator" and sub.owner != token.name):
        raise not_found
    return sub


async def check_target(app: web.Application, url: str) -> None:
    """422 on ``url`` when the egress rules refuse it (private addresses...)."""
    allow = app[SETTINGS].allow_private_targets
    try:
        await check_url(url, allow_private=allow)
    except EgressRefused as exc:
        raise invalid("url", str(exc)) from None


async def create(
    app: web.Application, token: Token, body: SubscriptionIn
) -> tuple[Subscription, str]:
    """A new webhook subscription owned by ``token``, and its secret (shown once).
    409 when a partner already holds ``max_subscriptions``."""
    await check_target(app, body.url)
    storage = app[STORAGE]
    limit = app[SETTINGS].max_subscriptions
    if token.role != "operator":
        held = await storage.list_subscriptions(owner=token.name, kind="webhook", limit=limit)
        if len(held) >= limit:
            raise Problem(409, f"a partner may hold at most {limit} subscriptions")
    secret = webhooks.new_secret()
    sub = await storage.create_subscription(
        id=new_subscription_id(),
        kind="webhook",
        url=body.url,
        topics=body.topics,
        events=body.events or [],
        secret=secret,
        owner=token.name,
        description=body.description,
    )
    return sub, secret


async def patch(app: web.Application, sub: Subscription, body: SubscriptionPatch) -> Subscription:
    """Apply the fields the patch sets. Re-enabling clears the failure window; an
    explicit ``events: null`` means every event type again."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude_none=True)
    if "url" in changes:
        await check_target(app, changes["url"])
    if changes.get("status") == "active" and sub.status != "active":
        changes["failing_since"] = None
    if "events" in body.model_fields_set and body.events is None:
        changes["events"] = []
    return await app[STORAGE].update_subscription(sub.id, changes)


async def delete(app: web.Application, sub: Subscription) -> None:
    """Remove the subscription, its deliveries and its attempt log."""
    await app[STORAGE].delete_subscription(sub.id)


def fingerprint(secret: str | None) -> str:
    """Names a secret without showing it (what a rotate form says it replaces)."""
    return hashlib.sha256((secret or "").encode()).hexdigest()[:16]


async def rotate_secret(
    app: web.Application, sub: Subscription, *, replaces: str | None = None
) -> tuple[Subscription, str]:
    """A new secret (returned once); the old one keeps signing for ``secret_grace``.
    ``replaces``: the ``fingerprint`` of the secret the caller means to replace; 409,
    rotating nothing, when the secret is another by now (a second click or a resent
    form would otherwise cut the grace of the secret the endpoint still checks)."""
    if replaces is not None and not hmac.compare_digest(
        replaces.encode(), fingerprint(sub.secret).encode()
    ):
        raise Problem(
            409,
            "The secret was rotated since the page you sent this from was shown (a second "
            "click, a resent form, or another rotation), so it was not rotated again: the "
            "secret before that rotation keeps signing through its grace period. If you "
            "did not see the newest secret, open the endpoint and rotate it once more.",
            title="Already rotated",
        )
    secret = webhooks.new_secret()
    grace = timedelta(seconds=app[SETTINGS].secret_grace)
    updated = await app[STORAGE].update_subscription(
        sub.id,
        {
            "secret": secret,
            "previous_secret": sub.secret,
            "previous_secret_expires_at": utcnow() + grace,
        },
    )
    return updated, secret


def ping_body(subscription_id: str, now: datetime) -> bytes:
    """The body of a test ping: ``{"type": "ping", "timestamp", "data"}``."""
    return webhooks.encode(
        {"type": PING, "timestamp": format_time(now), "data": {"subscription_id": subscription_id}}
    )


async def send_ping(app: web.Application, sub: Subscription) -> PingResult:
    """Send a signed ``ping`` now (not through the queue: no retry, no attempt
    recorded) and report what the endpoint answered."""
    now = utcnow()
    msg_id = f"msg_ping_{secrets.token_hex(8)}"
    request = signed_request(sub, msg_id, ping_body(sub.id, now), now)
    attempt = await app[DELIVERY].sender.send(request)
    return PingResult(
        delivered=attempt.ok,
        message_id=msg_id,
        status_code=attempt.status,
        latency_ms=attempt.latency_ms,
        error=attempt.error,
    )


async def owned_delivery(app: web.Application, sub: Subscription, raw_id: str) -> Delivery:
    """The delivery with that id, if it is ``sub``'s (404 otherwise)."""
    not_found = Problem(404, f"no delivery {raw_id!r} for subscription {sub.id!r}")
    delivery_id = row_id(raw_id)
    if delivery_id is None:
        raise not_found
    try:
        delivery = await app[STORAGE].get_delivery(delivery_id)
    except DeliveryNotFound:
        raise not_found from None
    if delivery.subscription_id != sub.id:
        raise not_found
    return delivery


async def retry(app: web.Application, delivery: Delivery) -> Delivery:
    """Make the delivery due now, whatever its status, and wake the dispatcher."""
    delivery = await app[STORAGE].retry_delivery(delivery.id)
    app[DELIVERY].dispatcher.wake()
    return delivery


async def recover(app: web.Application, sub: Subscription, since: datetime) -> int:
    """Make every failed or dead delivery created since ``since`` due now; how many."""
    count = await app[STORAGE].recover_deliveries(sub.id, since=since)
    app[DELIVERY].dispatcher.wake()
    return count


@dataclass(frozen=True)
class Status:
    """How a subscription is doing: the subscription as read after its attempts, when
    its next attempt is due, its latest attempts and those of the last day."""

    subscription: Subscription
    next_attempt_at: datetime | None
    recent: list[DeliveryAttempt]
    last_day: list[DeliveryAttempt]


async def status(app: web.Application, sub: Subscription) -> Status:
    storage = app[STORAGE]
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
    return Status(sub, next_attempt, recent, day)
