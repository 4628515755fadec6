"""What the renderers take: feed metadata and items, all values decided by the caller."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

from storage.records import Article

FeedFormat = Literal["rss", "atom", "json"]
FORMATS: tuple[FeedFormat, ...] = get_args(FeedFormat)

CONTENT_TYPES: dict[FeedFormat, str] = {
    "rss": "application/rss+xml; charset=utf-8",
    "atom": "application/atom+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}
MEDIA_TYPES: dict[FeedFormat, str] = {
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "json": "application/feed+json",
}


@dataclass(frozen=True)
class Category:
    term: str
    label: str
    scheme: str


@dataclass(frozen=True)
class Tombstone:
    """An entry deleted from the feed (RFC 6721 ``at:deleted-entry``): its id and when."""

    ref: str
    when: datetime
    link: str | None = None


@dataclass(frozen=True)
class FeedItem:
    """One entry: the stored article plus the URLs the caller resolved for it."""

    article: Article
    link: str
    categories: Sequence[Category] = ()


@dataclass(frozen=True)
class FeedInfo:
    """Feed-level metadata. ``updated`` must come from stored data (never "now"),
    so the same data always renders the same bytes. ``language`` None: the one
    language every item shares, if they share one. ``deleted``: entries removed
    from the feed that readers should drop (Atom only)."""

    id: str
    title: str
    description: str
    home_url: str
    self_url: str
    updated: datetime
    hub_url: str | None = None
    first_url: str | None = None
    next_url: str | None = None
    language: str | None = None
    author: str = "Syndicate"
    generator: str = "Syndicate"
    extra: dict[str, str] = field(default_factory=dict)
    deleted: Sequence[Tombstone] = ()
