"""SQLite rows to records and back: times are fixed-width RFC 3339 text, lists JSON text."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .._changes import SUBSCRIPTION_TIME_FIELDS, subscription_changes
from ..jsoncodec import dumps_text, loads_stored
from ..records import (
    Article,
    Delivery,
    DeliveryOutcome,
    Event,
    Subscription,
    Token,
    Topic,
    Worker,
    format_time,
    parse_time,
)

#: A row as sqlite3 returns it, or as ``_bulk.fetch_all`` does (a dict).
Row = sqlite3.Row | Mapping[str, Any]


@functools.lru_cache(maxsize=1024)
def _strings(text: str) -> tuple[str, ...]:
    """A stored JSON list of strings (topics, event types) as a tuple: the same few
    lists recur across rows, and each is parsed once."""
    return tuple(loads_stored(text))


def time_text(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def text_time(value: str | None) -> datetime | None:
    return None if value is None else parse_time(value)


def to_article(row: Row) -> Article:
    return Article(
        id=row["id"],
        guid=row["guid"],
        slug=row["slug"],
        title=row["title"],
        summary=row["summary"],
        content=row["content"],
        content_type=row["content_type"],
        topics=_strings(row["topics"]),
        author=row["author"],
        url=row["url"],
        image=row["image"],
        language=row["language"],
        published_at=parse_time(row["published_at"]),
        updated_at=parse_time(row["updated_at"]),
        created_at=parse_time(row["created_at"]),
        version=row["version"],
        deleted_at=text_time(row["deleted_at"]),
        scheduled=bool(row["scheduled"]),
    )


def article_params(article: Article) -> tuple[Any, ...]:
    """In the column order of ``save_article``."""
    return (
        article.id,
        article.guid,
        article.slug,
        article.title,
        article.summary,
        article.content,
        article.content_type,
        dumps_text(article.topics),
        article.author,
        article.url,
        article.image,
        article.language,
        format_time(article.published_at),
        format_time(article.updated_at),
        format_time(article.created_at),
        article.version,
        time_text(article.deleted_at),
        int(article.scheduled),
    )


def to_topic(row: Row) -> Topic:
    return Topic(
        slug=row["slug"],
        title=row["title"],
        description=row["description"],
        created_at=parse_time(row["created_at"]),
        updated_at=parse_time(row["updated_at"]),
        article_count=row["article_count"],
        changed_seq=row["changed_seq"],
        changed_at=text_time(row["changed_at"]),
    )


def to_token(row: Row) -> Token:
    return Token(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        created_at=parse_time(row["created_at"]),
        last_used_at=text_time(row["last_used_at"]),
        revoked_at=text_time(row["revoked_at"]),
    )


def to_event(row: Row) -> Event:
    return Event(
        seq=row["seq"],
        id=row["id"],
        type=row["type"],
        article_id=row["article_id"],
        topics=_strings(row["topics"]),
        data=loads_stored(row["data"]),
        created_at=parse_time(row["created_at"]),
        body=_body(row),
    )


def _body(row: Row) -> bytes | None:
    """The stored webhook body, where the query read the column and one is stored."""
    try:
        body = row["body"]
    except (IndexError, KeyError):  # a query of the event's heads only
        return None
    return None if body is None else str(body).encode()


def event_items(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any]
) -> list[tuple[int, str, str, tuple[str, ...], bytes | None]]:
    """The rows of ``list_event_items`` (on the reader's thread): plain tuples."""
    cursor = conn.execute(sql, params)
    cursor.row_factory = None
    return [
        (seq, event_id, event_type, _strings(topics), body)
        for seq, event_id, event_type, topics, body in cursor
    ]


def to_subscription(row: Row) -> Subscription:
    return Subscription(
        id=row["id"],
        kind=row["kind"],
        owner=row["owner"],
        url=row["url"],
        topics=_strings(row["topics"]),
        events=_strings(row["events"]),
        secret=row["secret"],
        status=row["status"],
        description=row["description"],
        created_at=parse_time(row["created_at"]),
        updated_at=parse_time(row["updated_at"]),
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=text_time(row["previous_secret_expires_at"]),
        lease_expires_at=text_time(row["lease_expires_at"]),
        last_success_at=text_time(row["last_success_at"]),
        failing_since=text_time(row["failing_since"]),
        topic_url=row["topic_url"],
        owner_key=row["owner_key"],
    )


def to_worker(row: Row) -> Worker:
    return Worker(
        id=row["id"],
        hostname=row["hostname"],
        pid=row["pid"],
        kind=row["kind"],
        started_at=parse_time(row["started_at"]),
        heartbeat_at=parse_time(row["heartbeat_at"]),
        held=row["held"],
    )


def to_delivery(row: Row) -> Delivery:
    return Delivery(
        id=row["id"],
        event_seq=row["event_seq"],
        subscription_id=row["subscription_id"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=parse_time(row["next_attempt_at"]),
        created_at=parse_time(row["created_at"]),
        claimed_until=text_time(row["claimed_until"]),
        claimed_by=row["claimed_by"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        last_response_body=row["last_response_body"],
        last_latency_ms=row["last_latency_ms"],
        delivered_at=text_time(row["delivered_at"]),
    )


def subscription_values(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``update_subscription``'s checked changes encoded for SQLite's columns."""
    values = subscription_changes(changes)
    for column, value in values.items():
        if column in ("topics", "events"):
            values[column] = json.dumps(value)
        elif column in SUBSCRIPTION_TIME_FIELDS:
            values[column] = time_text(value)
    return values


def outcome_values(outcome: DeliveryOutcome) -> list[Any]:
    """One element of ``complete_deliveries``' JSON array of outcomes."""
    return [
        outcome.delivery_id,
        outcome.status,
        time_text(outcome.next_attempt_at),
        outcome.status_code,
        outcome.error,
        outcome.response_body,
        outcome.latency_ms,
        time_text(outcome.claimed_until),
    ]
