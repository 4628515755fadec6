"""JSON Feed 1.1 (https://jsonfeed.org/version/1.1), built directly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ._fields import shared_language
from ._xml_ext import rfc3339 as _rfc3339
from .model import FeedInfo, FeedItem

VERSION = "https://jsonfeed.org/version/1.1"


def _item(item: FeedItem) -> dict[str, Any]:
    article = item.article
    out: dict[str, Any] = {
        "id": article.guid,
        "url": item.link,
        "title": article.title,
        "content_html": article.content,
        "summary": article.summary,
        "date_published": _rfc3339(article.published_at),
        "date_modified": _rfc3339(article.modified_at),
    }
    if article.url and article.url != item.link:
        out["external_url"] = article.url
    if article.author:
        out["authors"] = [{"name": article.author}]
    if article.image:
        out["image"] = article.image
    if article.language:
        out["language"] = article.language
    out["tags"] = [category.label for category in item.categories]
    return out


def render_json(info: FeedInfo, items: Sequence[FeedItem]) -> bytes:
    feed: dict[str, Any] = {
        "version": VERSION,
        "title": info.title,
        "home_page_url": info.home_url,
        "feed_url": info.self_url,
        "description": info.description,
        "authors": [{"name": info.author}],
    }
    language = info.language or shared_language(items)
    if language:
        feed["language"] = language
    if info.hub_url:
        feed["hubs"] = [{"type": "WebSub", "url": info.hub_url}]
    if info.next_url:
        feed["next_url"] = info.next_url
    feed["items"] = [_item(i) for i in items]
    return json.dumps(feed, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
