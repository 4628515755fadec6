"""A topic's feed document: its metadata and the bytes of one page in one format.

Used by the feed endpoint (web.routes.feeds, which caches and serves it) and by
WebSub notifications (delivery.websub, which push it). No HTTP here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import feeds
from storage import Storage
from storage.records import Article, FeedState, default_topic_title
from syndicate.content.articles import permalink
from syndicate.core.names import ALL_TOPICS_SLUG

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
#: How long a deleted article is announced in its Atom feeds (RFC 6721), counted back
#: from the feed's own ``updated``, so the same data always renders the same bytes.
TOMBSTONE_RETENTION = timedelta(days=30)
#: At most this many deletions are announced in one feed, newest first.
TOMBSTONE_LIMIT = 50


def feed_url(base_url: str, topic: str, fmt: str) -> str:
    return f"{base_url}/feeds/{topic}.{fmt}"


def topic_url(base_url: str, topic: str) -> str:
    return f"{base_url}/" if topic == ALL_TOPICS_SLUG else f"{base_url}/topics/{topic}"


@dataclass(frozen=True)
class TopicMeta:
    title: str
    description: str
    created_at: datetime


def last_modified(state: FeedState, fallback: datetime) -> datetime:
    """A feed's own ``updated``: its last article change or topic edit (``fallback``,
    the topic's creation, before either). The feed route and WebSub notifications
    both use it, so a polled feed and a pushed one are the same bytes."""
    times = [t for t in (state.changed_at, state.updated_at) if t is not None]
    return max(times) if times else fallback


async def topic_meta(storage: Storage, base: str, topic: str) -> TopicMeta:
    """Title and description of a feed (``TopicNotFound`` for an unknown topic)."""
    if topic == ALL_TOPICS_SLUG:
        return TopicMeta("All topics", f"Every article from {base}", _EPOCH)
    record = await storage.get_topic(topic)
    description = record.description or f"Articles about {record.title.lower()}"
    return TopicMeta(record.title, description, record.created_at)


def build_feed(
    base: str,
    topic: str,
    fmt: feeds.FeedFormat,
    meta: TopicMeta,
    articles: list[Article],
    *,
    self_url: str,
    updated: datetime,
    next_url: str | None = None,
    deleted: Sequence[Article] = (),
) -> bytes:
    """The feed document for these articles; every value from the arguments.
    ``deleted``: tombstones to announce (``tombstones``; Atom carries them)."""
    info = feeds.FeedInfo(
        id=feed_url(base, topic, "atom"),
        title=meta.title,
        description=meta.description,
        home_url=topic_url(base, topic),
        self_url=self_url,
        updated=updated,
        hub_url=f"{base}/hub",
        first_url=feed_url(base, topic, fmt),
        next_url=next_url,
        deleted=[
            feeds.Tombstone(a.guid, a.deleted_at, _link(base, a))
            for a in deleted
            if a.deleted_at is not None
        ],
    )
    titles = {topic: meta.title} if topic != ALL_TOPICS_SLUG else {}
    return feeds.render(fmt, info, [_item(base, a, titles) for a in articles])


def _item(base: str, article: Article, titles: dict[str, str]) -> feeds.FeedItem:
    categories = [
        feeds.Category(t, titles.get(t) or default_topic_title(t), f"{base}/topics/")
        for t in article.topics
    ]
    return feeds.FeedItem(article, _link(base, article), categories)


def _link(base: str, article: Article) -> str:
    return article.url or permalink(base, article)


async def tombstones(
    storage: Storage, topic: str, fmt: feeds.FeedFormat, updated: datetime
) -> list[Article]:
    """The deletions a feed's first page announces: Atom only (RFC 6721; RSS and JSON
    Feed have no way to say it), those within ``TOMBSTONE_RETENTION`` before its
    ``updated``, newest first."""
    if fmt != "atom":
        return []
    scope = None if topic == ALL_TOPICS_SLUG else topic
    since = updated - TOMBSTONE_RETENTION
    return await storage.list_deleted(topic=scope, since=since, limit=TOMBSTONE_LIMIT)
