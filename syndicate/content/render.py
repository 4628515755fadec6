"""A topic's feed document: its metadata and the bytes of one page in one format.

Used by the feed endpoint (web.routes.feeds, which caches and serves it) and by
WebSub notifications (delivery.websub, which push it). No HTTP here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import feeds
from storage import Storage
from storage.records import Article, default_topic_title
from syndicate.content.articles import permalink
from syndicate.core.names import ALL_TOPICS_SLUG

#: The slug of the feed (and page) of every article.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def feed_url(base_url: str, topic: str, fmt: str) -> str:
    return f"{base_url}/feeds/{topic}.{fmt}"


def topic_url(base_url: str, topic: str) -> str:
    return f"{base_url}/" if topic == ALL_TOPICS_SLUG else f"{base_url}/topics/{topic}"


@dataclass(frozen=True)
class TopicMeta:
    title: str
    description: str
    created_at: datetime


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
) -> bytes:
    """The feed document for these articles; every value from the arguments."""
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
    )
    titles = {topic: meta.title} if topic != ALL_TOPICS_SLUG else {}
    return feeds.render(fmt, info, [_item(base, a, titles) for a in articles])


def _item(base: str, article: Article, titles: dict[str, str]) -> feeds.FeedItem:
    categories = [
        feeds.Category(t, titles.get(t) or default_topic_title(t), f"{base}/topics/")
        for t in article.topics
    ]
    return feeds.FeedItem(article, article.url or permalink(base, article), categories)
