"""The JSON the service answers with, as pydantic models: the API's responses and
the article a webhook carries. Handlers build these models and send their dump
(``to_json``), and /openapi.json documents the same models, so the documented
shape and the real one are one definition.

Times are RFC 3339 text as ``storage.records.format_time`` writes it (UTC, always
with microseconds: fixed width), made when the model is built; the models hold
JSON-ready values only, so their dump needs no per-field Python serializers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from storage.jsoncodec import dumps
from storage.records import (
    Article,
    Delivery,
    DeliveryAttempt,
    PutOutcome,
    Subscription,
    Topic,
    Verification,
    format_time,
)
from syndicate.content.articles import permalink
from syndicate.core.names import DeliveryStatus, EventType, SubscriptionKind, SubscriptionStatus

#: Where an article is in its life (``ArticleOut.status``).
ArticleStatus = Literal["scheduled", "published", "deleted"]
#: An instant as RFC 3339 text (``format_time``).
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


def to_json(model: BaseModel, *, exclude_none: bool = False) -> bytes:
    """The model's JSON (compact UTF-8; orjson, about twice as fast as pydantic's
    own ``model_dump_json`` on article bodies)."""
    return dumps(model.model_dump(mode="json", exclude_none=exclude_none))


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


class ArticleOut(BaseModel):
    id: str
    guid: str
    slug: str
    title: str
    summary: str
    content: str
    content_type: str
    topics: list[str]
    author: str | None
    url: str = Field(description="Canonical URL, else the service's permalink.")
    canonical_url: str | None
    image: str | None
    language: str | None
    published_at: Timestamp
    updated_at: Timestamp
    created_at: Timestamp
    version: int
    deleted_at: Timestamp | None
    status: ArticleStatus = Field(
        description="scheduled: published_at is in the future and nobody has been told "
        "of the article yet (readers and partners see nothing of it until then); "
        "published: in feeds and pages, pushed; deleted: a tombstone."
    )

    @classmethod
    def of(cls, article: Article, base_url: str) -> ArticleOut:
        deleted_at = article.deleted_at
        return cls(
            id=article.id,
            guid=article.guid,
            slug=article.slug,
            title=article.title,
            summary=article.summary,
            content=article.content,
            content_type=article.content_type,
            topics=list(article.topics),
            author=article.author,
            url=article.url or permalink(base_url, article),
            canonical_url=article.url,
            image=article.image,
            language=article.language,
            published_at=format_time(article.published_at),
            updated_at=format_time(article.updated_at),
            created_at=format_time(article.created_at),
            version=article.version,
            deleted_at=None if deleted_at is None else format_time(deleted_at),
            status=article_status(article),
        )


def article_status(article: Article) -> ArticleStatus:
    if article.deleted_at is not None:
        return "deleted"
    return "scheduled" if article.scheduled else "published"


class ArticleList(BaseModel):
    articles: list[ArticleOut]
    next_cursor: str | None


class TopicOut(BaseModel):
    slug: str
    title: str
    description: str
    article_count: int
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, topic: Topic) -> TopicOut:
        return cls(
            slug=topic.slug,
            title=topic.title,
            description=topic.description,
            article_count=topic.article_count,
            created_at=format_time(topic.created_at),
            updated_at=format_time(topic.updated_at),
        )


class TopicList(BaseModel):
    topics: list[TopicOut]


#: What became of one article of a batch: stored (``PutOutcome``) or rejected.
BatchStatus = Literal[PutOutcome, "rejected"]


class BatchItemResult(BaseModel):
    index: int
    id: str | None
    status: BatchStatus
    errors: list[dict[str, str]] = []


class BatchResult(BaseModel):
    created: int
    updated: int
    unchanged: int
    rejected: int
    results: list[BatchItemResult]


class FieldError(BaseModel):
    field: str
    message: str


class ProblemOut(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str | None = None
    errors: list[FieldError] | None = None
    errors_omitted: int | None = Field(
        default=None, description="How many more validation errors were found than listed."
    )


class SubscriptionOut(BaseModel):
    id: str
    kind: SubscriptionKind
    url: str
    topics: list[str]
    events: list[str]
    description: str
    status: SubscriptionStatus
    owner: str | None
    created_at: Timestamp
    updated_at: Timestamp
    last_success_at: Timestamp | None
    failing_since: Timestamp | None
    previous_secret_expires_at: Timestamp | None

    @classmethod
    def of(cls, sub: Subscription) -> SubscriptionOut:
        return SubscriptionOut(
            id=sub.id,
            kind=sub.kind,
            url=sub.url,
            topics=list(sub.topics),
            events=list(sub.events),
            description=sub.description,
            status=sub.status,
            owner=sub.owner,
            created_at=format_time(sub.created_at),
            updated_at=format_time(sub.updated_at),
            last_success_at=_time(sub.last_success_at),
            failing_since=_time(sub.failing_since),
            previous_secret_expires_at=_time(sub.previous_secret_expires_at),
        )


class SubscriptionWithSecret(SubscriptionOut):
    secret: str = Field(description="whsec_...: shown only in this response.")

    @classmethod
    def with_secret(cls, sub: Subscription, secret: str) -> SubscriptionWithSecret:
        return cls.model_validate({**SubscriptionOut.of(sub).model_dump(), "secret": secret})


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionOut]
    next_cursor: str | None


class DeliveryOut(BaseModel):
    id: int
    message_id: str = Field(
        description="The webhook-id header: the event's id (msg_ + a UUIDv7), the same for "
        "every subscriber and on every retry."
    )
    event_seq: int
    subscription_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: Timestamp | None
    last_status_code: int | None
    last_error: str | None
    last_response_body: str | None
    last_latency_ms: float | None
    delivered_at: Timestamp | None
    created_at: Timestamp

    @classmethod
    def of(cls, delivery: Delivery, message_id: str) -> DeliveryOut:
        """``message_id``: the delivery's event's id (``Storage.get_event_ids``)."""
        waiting = delivery.status in ("pending", "failed")
        return cls(
            id=delivery.id,
            message_id=message_id,
            event_seq=delivery.event_seq,
            subscription_id=delivery.subscription_id,
            status=delivery.status,
            attempts=delivery.attempts,
            next_attempt_at=format_time(delivery.next_attempt_at) if waiting else None,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            last_response_body=delivery.last_response_body,
            last_latency_ms=delivery.last_latency_ms,
            delivered_at=_time(delivery.delivered_at),
            created_at=format_time(delivery.created_at),
        )


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    next_cursor: str | None


class PingResult(BaseModel):
    delivered: bool
    message_id: str
    status_code: int | None
    latency_ms: float
    error: str | None


class RecoverResult(BaseModel):
    recovered: int
    since: Timestamp


class PortalLinkOut(BaseModel):
    url: str = Field(description="Open it to sign in to the portal as the partner, once.")
    partner: str
    expires_at: Timestamp


class HealthOut(BaseModel):
    status: str
    database: str | None = None


# -- status pages (GET /api/subscriptions/{id}/status, GET /hub/status) ------------------

#: What ``GET /hub/status`` says of a (callback, topic) pair: its subscription's status,
#: ``expired`` once its lease ran out, ``unsubscribed`` when there is none.
HubState = Literal["active", "pending", "disabled", "expired", "unsubscribed"]


class AttemptOut(BaseModel):
    """One attempt to deliver (a webhook push or a WebSub notification)."""

    delivery_id: int
    event_id: str | None = Field(
        description="The webhook-id of the change it carried (null once the change log "
        "was pruned past it)."
    )
    attempted_at: Timestamp
    outcome: DeliveryStatus = Field(
        description="The delivery's status after it: delivered, failed (retried), dead."
    )
    succeeded: bool
    status_code: int | None = Field(description="null when no answer came.")
    latency_ms: float | None
    error: str | None

    @classmethod
    def of(cls, attempt: DeliveryAttempt) -> AttemptOut:
        return cls(
            delivery_id=attempt.delivery_id,
            event_id=attempt.event_id,
            attempted_at=format_time(attempt.attempted_at),
            outcome=attempt.outcome,
            succeeded=attempt.succeeded,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
        )


class LatencyOut(BaseModel):
    p50: float | None
    p99: float | None


class DayStatsOut(BaseModel):
    attempts: int
    succeeded: int
    success_rate: float | None = Field(description="succeeded / attempts; null without attempts.")
    latency_ms: LatencyOut = Field(
        description="Percentiles (nearest rank) of the attempts with a measured latency."
    )

    @classmethod
    def of(cls, attempts: Sequence[DeliveryAttempt]) -> DayStatsOut:
        succeeded = sum(1 for a in attempts if a.succeeded)
        latencies = sorted(a.latency_ms for a in attempts if a.latency_ms is not None)
        return cls(
            attempts=len(attempts),
            succeeded=succeeded,
            success_rate=round(succeeded / len(attempts), 4) if attempts else None,
            latency_ms=LatencyOut(p50=_rank(latencies, 0.5), p99=_rank(latencies, 0.99)),
        )


def _rank(ordered: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ascending values (None for none)."""
    if not ordered:
        return None
    return round(ordered[max(1, math.ceil(fraction * len(ordered))) - 1], 3)


class SubscriptionStatusOut(BaseModel):
    id: str
    state: SubscriptionStatus
    failing_since: Timestamp | None = Field(
        description="Since when every attempt failed (null after a success)."
    )
    last_success_at: Timestamp | None
    next_attempt_at: Timestamp | None = Field(
        description="When the next delivery or retry is due (null: nothing is waiting)."
    )
    last_day: DayStatsOut = Field(
        description="Attempts in the last 24 hours (at most the latest 10,000 of them)."
    )
    recent_attempts: list[AttemptOut] = Field(description="The last 20 attempts, newest first.")


class VerificationOut(BaseModel):
    verified_at: Timestamp
    mode: str
    result: Literal["confirmed", "not_confirmed", "denied"]
    detail: str

    @classmethod
    def of(cls, verification: Verification) -> VerificationOut:
        return cls(
            verified_at=format_time(verification.verified_at),
            mode=verification.mode,
            result=verification.result,
            detail=verification.detail,
        )


class HubStatusOut(BaseModel):
    """A WebSub (callback, topic) pair as ``GET /hub/status`` shows it; never its secret."""

    topic: str
    callback: str
    subscribed: bool
    state: HubState
    lease_expires_at: Timestamp | None
    secret_set: bool = Field(
        description="Whether notifications are signed (the secret itself is never shown)."
    )
    subscribed_at: Timestamp | None
    last_verification: VerificationOut | None
    recent_attempts: list[AttemptOut] = Field(
        description="The last 20 notification attempts, newest first."
    )


# -- the change log as an API (GET /api/events) ------------------------------------------


class DeletedArticleData(BaseModel):
    """What an ``article.deleted`` event carries: enough to find and drop the article."""

    id: str
    guid: str
    topics: list[str]
    deleted_at: Timestamp | None


class EventOut(BaseModel):
    """One change, as a webhook POSTs it, with its ``id`` (the push's ``webhook-id``)."""

    id: str = Field(description="msg_ + a UUIDv7: the webhook-id of every push of this change")
    type: EventType
    timestamp: Timestamp
    data: ArticleOut | DeletedArticleData


class EventList(BaseModel):
    events: list[EventOut]
    next_cursor: str = Field(
        description="Where this page ended (past events that did not match the filters "
        "too): pass it as after= to read on."
    )
    has_more: bool = Field(description="More events may be there already: read on at once.")
