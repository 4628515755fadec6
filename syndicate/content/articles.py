"""From validated input to storage drafts; permalinks, deleted-article JSON, list cursors.

The API's article JSON is ``content.responses.ArticleOut``.

Shared by the HTTP API and ``syndicate import`` so both treat input the same.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote

from storage.base import ListCursor
from storage.records import Article, ArticleDraft, format_time, parse_time, utcnow
from syndicate.content.models import ArticleIn
from syndicate.content.text import render_content, slugify, summarize
from syndicate.core.errors import InvalidInput


def new_article_id() -> str:
    return uuid.uuid4().hex


def make_guid(host: str, article_id: str, when: datetime) -> str:
    """RFC 4151 tag URI: permanent once issued, whatever the base URL becomes."""
    return f"tag:{host},{when.year}:article/{article_id}"


def article_base(item: ArticleIn, base_url: str | None) -> str | None:
    """The URL relative links in an article's content are relative to: its canonical
    ``url``, else its permalink under ``base_url`` (``None`` if neither is known)."""
    if item.url is not None:
        return item.url
    if base_url is None:
        return None
    return f"{base_url}/articles/{quote(item.slug or slugify(item.title), safe='')}"


def to_draft(
    item: ArticleIn,
    *,
    host: str,
    base_url: str | None = None,
    article_id: str | None = None,
    content: str | None = None,
) -> ArticleDraft:
    """Render and sanitize the content (unless ``content`` is that, done already),
    its relative links resolved against ``article_base``; fill in the summary, slug
    and guid."""
    aid = article_id or item.id or new_article_id()
    if content is None:
        content = render_content(item.content, item.content_type, article_base(item, base_url))
    summary = " ".join(item.summary.split()) if item.summary else summarize(content)
    return ArticleDraft(
        id=aid,
        guid=make_guid(host, aid, utcnow()),
        slug=item.slug or slugify(item.title),
        slug_explicit=item.slug is not None,
        title=item.title,
        summary=summary,
        content=content,
        content_type=item.content_type,
        topics=tuple(item.topics),
        author=item.author,
        url=item.url,
        image=item.image,
        language=item.language,
        published_at=item.published_at,
    )


#: Content up to this many characters is rendered on the event loop (a 4 KB article
#: renders in ~0.1 ms: sanitize, make valid, resolve links).
INLINE_RENDER_CHARS = 4096


async def draft_off_loop(
    item: ArticleIn, *, host: str, base_url: str | None = None, article_id: str | None = None
) -> ArticleDraft:
    """``to_draft`` off the event loop: rendering and sanitizing never hold it for
    long. Content up to ``INLINE_RENDER_CHARS`` is rendered here (tens of µs: less
    than the hop to a thread, which also contends for the GIL while lxml parses);
    larger content on a worker thread. ``ContentTooComplex`` beyond the limits."""
    if len(item.content) <= INLINE_RENDER_CHARS:
        return to_draft(item, host=host, base_url=base_url, article_id=article_id)
    return await asyncio.to_thread(
        to_draft, item, host=host, base_url=base_url, article_id=article_id
    )


def permalink(base_url: str, article: Article) -> str:
    return f"{base_url}/articles/{quote(article.slug, safe='')}"


def deleted_article_json(article: Article) -> dict[str, Any]:
    """What ``article.deleted`` carries: enough to find and drop the article (a
    webhook payload only: the API answers a deleted article with 410)."""
    return {
        "id": article.id,
        "guid": article.guid,
        "topics": list(article.topics),
        "deleted_at": format_time(article.deleted_at) if article.deleted_at else None,
    }


class BadCursor(InvalidInput):
    pass


def encode_cursor(article: Article) -> str:
    raw = json.dumps([format_time(article.published_at), article.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> ListCursor:
    try:
        padded = value + "=" * (-len(value) % 4)
        when, last_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        return parse_time(when), str(last_id)
    except (ValueError, TypeError, binascii.Error, UnicodeError) as exc:
        raise BadCursor("not a cursor this service issued") from exc
