"""Rows as frozen dataclasses: what every storage backend hands out.

All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import uuid_utils

# Shared names, re-exported: the backends import them from here.
from syndicate.core.names import DeliveryStatus as DeliveryStatus
from syndicate.core.names import EventType as EventType
from syndicate.core.names import SubscriptionKind as SubscriptionKind
from syndicate.core.names import SubscriptionStatus as SubscriptionStatus

PutOutcome = Literal["created", "updated", "unchanged"]
Role = Literal["operator", "partner"]

ROLES: tuple[Role, ...] = ("operator", "partner")
#: Subscription fields ``update_subscription`` may change.
SUBSCRIPTION_MUTABLE = frozenset(
    {
        "url",
        "topics",
        "events",
        "description",
        "status",
        "secret",
        "previous_secret",
        "previous_secret_expires_at",
        "lease_expires_at",
        "last_success_at",
        "failing_since",
        "topic_url",
    }
)


#: Kinds of subscription, in the order a claim of any kind takes them.
SUBSCRIPTION_KINDS: tuple[SubscriptionKind, ...] = ("webhook", "websub")
#: A claim ranks at most this many times its limit of the longest-due deliveries.
CLAIM_SCAN_FACTOR = 8


def claim_scan(limit: int) -> int:
    """How many due deliveries a claim of ``limit`` reads at the most."""
    return max(limit * CLAIM_SCAN_FACTOR, 1000)


def owner_key(kind: str, owner: str | None, url: str) -> str:
    """The owner that a subscription's deliveries are shared out by: the partner for a
    partner's webhook (however many hosts its endpoints are on), the callback host for
    WebSub, the target's host for an operator-made webhook. WebSub callbacks and
    webhooks on one host are different owners: an anonymous subscriber never shares an
    operator's endpoint's cap."""
    host = (urlsplit(url).hostname or "").lower()
    if kind == "websub":
        return f"callback:{host}"
    return f"host:{host}" if owner is None else f"partner:{owner}"


def new_event_id() -> str:
    """``msg_`` + a UUIDv7 as 32 lowercase hex digits: unique across databases, restores
    and deployments (74 random bits beside the millisecond), and sorting by time."""
    return "msg_" + uuid_utils.uuid7().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds: fixed width, so it also sorts as text."""
    if value.tzinfo is not UTC:
        # Converted before the cache: in a zone with DST, two instants an hour
        # apart (``fold``) compare equal as local times.
        value = value.astimezone(UTC)
    return _format_utc(value)


@functools.lru_cache(maxsize=4096)
def _format_utc(value: datetime) -> str:
    """Cached: one write formats the same few instants (its ``now``) many times."""
    # Not strftime, whose %Y does not zero-pad years below 1000 everywhere.
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 (twice as fast here)
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)  # "Z" included (Python 3.11+)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def default_topic_title(slug: str) -> str:
    """``liver-health`` -> ``Liver health``."""
    return slug.replace("-", " ").strip().capitalize() or slug


@dataclass(frozen=True)
class ArticleDraft:
    """An article as the operator sent it, already validated and sanitized.

    ``slug`` is the wanted slug; the backend makes it unique. ``slug_explicit``
    says whether the operator chose it (a replace keeps the stored slug
    otherwise). ``published_at=None`` means "now" on create and "keep" on replace.
    ``guid`` is only used when the article is created.
    """

    id: str
    guid: str
    slug: str
    title: str
    summary: str
    content: str
    content_type: str
    topics: tuple[str, ...]
    author: str | None = None
    url: str | None = None
    image: str | None = None
    language: str | None = None
    published_at: datetime | None = None
    slug_explicit: bool = False


@dataclass(frozen=True)
class Article:
    id: str
    guid: str
    slug: str
    title: str
    summary: str
    content: str
    content_type: str
    topics: tuple[str, ...]
    author: str | None
    url: str | None
    image: str | None
    language: str | None
    published_at: datetime
    updated_at: datetime
    created_at: datetime
    version: int
    deleted_at: datetime | None = None
    #: True while the article's publication has not been announced: it was written
    #: with a future ``published_at`` and ``Storage.publish_due`` has not reached it.
    #: Readers and partners see nothing of it (no listing, no event, no topic count).
    scheduled: bool = False

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def modified_at(self) -> datetime:
        """The article's last real change, as readers saw it: its publication time
        until it changed after publication (a batch written at one instant keeps each
        article's own time), then its last update. Feeds (Atom ``updated``, JSON
        ``date_modified``), pages (``dateModified``, "Updated") and sitemaps
        (``lastmod``) all use this one rule."""
        if self.version <= 1 or self.updated_at <= self.published_at:
            return self.published_at
        return self.updated_at

    @property
    def live(self) -> bool:
        """Shown to readers: neither deleted nor still scheduled."""
        return self.deleted_at is None and not self.scheduled

    def same_content(self, other: Article) -> bool:
        """True when nothing a reader could see differs (ignores bookkeeping)."""
        keys = (
            "slug",
            "title",
            "summary",
            "content",
            "content_type",
            "topics",
            "author",
            "url",
            "image",
            "language",
            "published_at",
            "deleted_at",
        )
        return all(getattr(self, k) == getattr(other, k) for k in keys)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the event snapshot format): every field, times as
        ``format_time`` text, topics as a list. Spelled out, not a loop over
        ``dataclasses.fields``: it runs once per stored article, and this is 4x faster."""
        deleted_at = self.deleted_at
        return {
            "id": self.id,
            "guid": self.guid,
            "slug": self.slug,
            "title": self.title,
            "summary": self.summary,
            "content": self.content,
            "content_type": self.content_type,
            "topics": list(self.topics),
            "author": self.author,
            "url": self.url,
            "image": self.image,
            "language": self.language,
            "published_at": format_time(self.published_at),
            "updated_at": format_time(self.updated_at),
            "created_at": format_time(self.created_at),
            "version": self.version,
            "deleted_at": None if deleted_at is None else format_time(deleted_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Article:
        kwargs = dict(data)
        for key in ("published_at", "updated_at", "created_at", "deleted_at"):
            if kwargs.get(key) is not None:
                kwargs[key] = parse_time(kwargs[key])
        kwargs["topics"] = tuple(kwargs["topics"])
        return cls(**kwargs)


@dataclass(frozen=True)
class PutResult:
    article: Article
    outcome: PutOutcome


@dataclass(frozen=True)
class Topic:
    slug: str
    title: str
    description: str
    created_at: datetime
    updated_at: datetime
    article_count: int = 0
    changed_seq: int = 0
    changed_at: datetime | None = None


@dataclass(frozen=True)
class FeedState:
    """What a cached feed depends on: the last event touching it and the topic's
    own edits. ``seq == 0`` and ``changed_at is None`` when nothing happened yet."""

    seq: int
    changed_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class Event:
    """One article change; ``seq`` orders the change log (in one database); ``id``
    (``new_event_id``) names the change everywhere: the ``webhook-id`` of every
    delivery of it."""

    seq: int
    id: str
    type: EventType
    article_id: str
    topics: tuple[str, ...]
    data: dict[str, Any]
    created_at: datetime
    #: The webhook body (``{"type", "timestamp", "data"}``, UTF-8 JSON) as rendered
    #: when the event was written (``Storage.set_event_renderer``); None for an event
    #: written without a renderer, or read without it. Same bytes as rendering
    #: ``data`` would give.
    body: bytes | None = None


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Subscription:
    id: str
    kind: SubscriptionKind
    owner: str | None
    url: str
    topics: tuple[str, ...]
    events: tuple[str, ...]
    secret: str | None
    status: SubscriptionStatus
    description: str
    created_at: datetime
    updated_at: datetime
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    lease_expires_at: datetime | None = None
    last_success_at: datetime | None = None
    failing_since: datetime | None = None
    topic_url: str | None = None
    #: Whose share of the delivery slots this subscription's deliveries use: see owner_key().
    owner_key: str | None = None

    def state_at(self, now: datetime) -> SubscriptionStatus | Literal["expired"]:
        """What it is doing at ``now``: its status, or ``expired`` for an active one
        whose lease has run out (it gets nothing until renewed)."""
        if self.status == "active" and self.lease_expires_at and self.lease_expires_at <= now:
            return "expired"
        return self.status


@dataclass(frozen=True)
class DeliveryOutcome:
    """The result of one attempt, as the dispatcher reports it.

    ``status`` is the delivery's new status: ``delivered``, ``failed`` (retried
    at ``next_attempt_at``) or ``dead``. ``succeeded`` says whether the
    endpoint accepted it (it drives the subscription's failure window).
    """

    delivery_id: int
    subscription_id: str
    status: DeliveryStatus
    succeeded: bool
    next_attempt_at: datetime | None = None
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    latency_ms: float | None = None
    #: When the request was signed and sent (its ``webhook-timestamp``); None when
    #: none was sent (a delivery given up without a request).
    sent_at: datetime | None = None
    #: The lease of the claim this attempt was made under (``Delivery.claimed_until``
    #: as claimed): it tells that claim from a later one by the same worker.
    claimed_until: datetime | None = None


@dataclass(frozen=True)
class DeliveryAttempt:
    """One recorded attempt of a delivery (``complete_deliveries`` writes one per
    outcome): what a status page and the delivery log show. ``outcome`` is the
    delivery's status after it (``delivered``, ``failed`` or ``dead``)."""

    delivery_id: int
    subscription_id: str
    attempted_at: datetime
    outcome: DeliveryStatus
    succeeded: bool
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    #: The delivery's event id (``webhook-id``), as ``list_attempts`` reads it; None
    #: once the event was pruned.
    event_id: str | None = None
    #: The attempt's own id (the portal's attempt pages link to it).
    id: int = 0
    #: The start of what the endpoint answered (the sender keeps at most 4 KiB).
    response_body: str | None = None
    #: When the request was signed and sent (its ``webhook-timestamp``).
    sent_at: datetime | None = None
    #: The delivery's event type, as ``list_attempts`` / ``get_attempt`` read it.
    event_type: str | None = None


@dataclass(frozen=True)
class PortalSession:
    """A signed-in portal session (stored by the hash of its cookie): the token it
    acts as, live (a revoked token's sessions are gone), and when it ends."""

    token: Token
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class AttemptCount:
    """How many attempts of one outcome were recorded in one time bucket
    (``Storage.count_attempts``): what the operator dashboard charts."""

    bucket: datetime
    outcome: DeliveryStatus
    succeeded: bool
    count: int


VerificationResult = Literal["confirmed", "not_confirmed", "denied"]


@dataclass(frozen=True)
class Verification:
    """The last verification of intent the hub made for one (callback, topic URL)
    pair, kept whether or not it ended in a subscription."""

    callback: str
    topic_url: str
    mode: str  # "subscribe" or "unsubscribe"
    verified_at: datetime
    result: VerificationResult
    detail: str = ""


@dataclass(frozen=True)
class Worker:
    """A live process that claims deliveries (``serve`` or ``worker``), as it last
    heartbeated; ``held``: deliveries it holds under a live lease."""

    id: str
    hostname: str
    pid: int
    kind: str
    started_at: datetime
    heartbeat_at: datetime
    held: int = 0


@dataclass(frozen=True)
class FanOutStep:
    """What one step of ``fan_out_events`` did: deliveries created, the id of the last
    subscription it looked at (the next step starts after it; None: there were
    none), and whether it was the last step (the cursor moved)."""

    created: int
    last_subscription: str | None
    done: bool


@dataclass(frozen=True)
class DeliveryStats:
    """Queue depth for metrics: not yet delivered (pending or failed), due now, and
    when the oldest undelivered one was created."""

    pending: int
    due: int
    oldest_pending_at: datetime | None


@dataclass(frozen=True)
class Delivery:
    id: int
    event_seq: int
    subscription_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    claimed_until: datetime | None = None
    claimed_by: str | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    last_response_body: str | None = None
    last_latency_ms: float | None = None
    delivered_at: datetime | None = None
