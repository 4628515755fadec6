"""Standard Webhooks: secrets, signatures, message bodies, and which events go where."""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from storage.jsoncodec import dumps
from storage.records import Article, Delivery, Event, Subscription, format_time
from syndicate.content.articles import deleted_article_json, permalink
from syndicate.content.responses import article_status
from syndicate.core.names import EVERY_TOPIC, EventType
from syndicate.delivery.sender import OutboundRequest

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_subscription_id() -> str:
    """Sorts by creation time (milliseconds), then 48 random bits."""
    return f"sub_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (Standard Webhooks' format)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64 HMAC-SHA256>`` signature over ``id.timestamp.body``."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    # hmac.digest: OpenSSL's one-shot HMAC, several times faster than an hmac.new object.
    return "v1," + base64.b64encode(hmac.digest(_key(secret), signed, "sha256")).decode()


def signature_header(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Space-separated signatures, one per valid secret (two during rotation)."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def signing_secrets(subscription: Subscription, now: datetime) -> list[str]:
    """The current secret, plus the previous one while its grace period lasts."""
    keys = [subscription.secret] if subscription.secret else []
    expires = subscription.previous_secret_expires_at
    if subscription.previous_secret and expires is not None and expires > now:
        keys.append(subscription.previous_secret)
    return keys


def message_id(event: Event) -> str:
    """The event's own id (``msg_`` + a UUIDv7, unique across databases): the same for
    every subscriber and every retry, so receivers can drop duplicates."""
    return event.id


def article_json(article: Article, base_url: str) -> dict[str, Any]:
    """``ArticleOut.of(article, base_url).model_dump(mode="json")`` without pydantic
    (a fifth of the cost): the same keys in the same order, the same values
    (tests/test_event_bodies.py holds them equal over the adversarial corpus).
    ``ArticleOut`` stays the documented model of both."""
    url = article.url
    deleted_at = article.deleted_at
    return {
        "id": article.id,
        "guid": article.guid,
        "slug": article.slug,
        "title": article.title,
        "summary": article.summary,
        "content": article.content,
        "content_type": article.content_type,
        "topics": list(article.topics),
        "author": article.author,
        "url": url or permalink(base_url, article),
        "canonical_url": url,
        "image": article.image,
        "language": article.language,
        "published_at": format_time(article.published_at),
        "updated_at": format_time(article.updated_at),
        "created_at": format_time(article.created_at),
        "version": article.version,
        "deleted_at": None if deleted_at is None else format_time(deleted_at),
        "status": article_status(article),
    }


def render_body(
    event_type: EventType, article: Article, created_at: datetime, base_url: str
) -> bytes:
    """The webhook body of an event of ``event_type`` about ``article`` (the state
    the event's snapshot holds), made at ``created_at``: ``{"type", "timestamp",
    "data"}``."""
    data = (
        deleted_article_json(article)
        if event_type == "article.deleted"
        else article_json(article, base_url)
    )
    return encode({"type": event_type, "timestamp": format_time(created_at), "data": data})


def body_renderer(base_url: str) -> Callable[[EventType, Article, datetime], bytes]:
    """What ``Storage.set_event_renderer`` takes: every event written is stored with
    its body, rendered with ``base_url`` (the database's, settled)."""

    def render(event_type: EventType, article: Article, created_at: datetime) -> bytes:
        return render_body(event_type, article, created_at, base_url)

    return render


def event_body(event: Event, base_url: str) -> bytes:
    """``{"type", "timestamp", "data"}``: the same bytes on every attempt, and in the
    pull API and the stream. The body stored with the event when it was written
    (``Event.body``), else rendered from its snapshot in the same way."""
    if event.body is not None:
        return event.body
    return render_body(event.type, Article.from_json(event.data), event.created_at, base_url)


def encode(payload: dict[str, Any]) -> bytes:
    return dumps(payload)


def matches(subscription: Subscription, event: Event) -> bool:
    """Does this webhook subscription want this event? Topics ``[EVERY_TOPIC]`` ("*"): all;
    no event filter means every type. A subscription never receives events from
    before it existed."""
    if event.created_at < subscription.created_at:
        return False
    if subscription.events and event.type not in subscription.events:
        return False
    return EVERY_TOPIC in subscription.topics or bool(set(subscription.topics) & set(event.topics))


def webhook_request(
    delivery: Delivery,
    event: Event,
    subscription: Subscription,
    base_url: str,
    now: datetime,
    *,
    body: bytes | None = None,
) -> OutboundRequest:
    """``body``: the event's encoded body when the caller has it already (it is the
    same for every subscription)."""
    if body is None:
        body = event_body(event, base_url)
    return signed_request(subscription, message_id(event), body, now)


def signed_request(
    subscription: Subscription, msg_id: str, body: bytes, now: datetime
) -> OutboundRequest:
    """A Standard Webhooks POST of ``body``, signed with every valid secret."""
    timestamp = int(now.timestamp())
    keys = signing_secrets(subscription, now)
    return OutboundRequest(
        url=subscription.url,
        body=body,
        headers={
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(keys, msg_id, timestamp, body),
        },
    )
