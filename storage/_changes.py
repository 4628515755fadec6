"""What an article write does, decided once for every backend (no I/O here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime

from .errors import ArticleExists
from .records import Article, ArticleDraft, EventType, PutOutcome

MAX_SLUG_SUFFIX = 10_000


def wanted_slug(existing: Article | None, draft: ArticleDraft) -> str | None:
    """The slug to make unique, or ``None`` to keep the stored one."""
    if existing is None:
        return draft.slug
    if draft.slug_explicit and draft.slug != existing.slug:
        return draft.slug
    return None


def slug_candidates(base: str) -> Iterator[str]:
    yield base
    for n in range(2, MAX_SLUG_SUFFIX):
        yield f"{base}-{n}"


@dataclasses.dataclass(frozen=True)
class Change:
    article: Article
    outcome: PutOutcome
    event: EventType | None


def plan_put(
    existing: Article | None,
    draft: ArticleDraft,
    *,
    slug: str | None,
    now: datetime,
    create_only: bool,
) -> Change:
    """The article after the write, and which event (if any) it produces."""
    if existing is None:
        article = Article(
            id=draft.id,
            guid=draft.guid,
            slug=slug or draft.slug,
            title=draft.title,
            summary=draft.summary,
            content=draft.content,
            content_type=draft.content_type,
            topics=draft.topics,
            author=draft.author,
            url=draft.url,
            image=draft.image,
            language=draft.language,
            published_at=draft.published_at or now,
            updated_at=now,
            created_at=now,
            version=1,
        )
        return Change(article, "created", "article.published")
    if create_only:
        raise ArticleExists(draft.id)
    candidate = dataclasses.replace(
        existing,
        slug=slug or existing.slug,
        title=draft.title,
        summary=draft.summary,
        content=draft.content,
        content_type=draft.content_type,
        topics=draft.topics,
        author=draft.author,
        url=draft.url,
        image=draft.image,
        language=draft.language,
        published_at=draft.published_at or existing.published_at,
        deleted_at=None,
    )
    if candidate.same_content(existing):
        return Change(existing, "unchanged", None)
    revived = existing.deleted
    article = dataclasses.replace(candidate, version=existing.version + 1, updated_at=now)
    if revived:
        return Change(article, "created", "article.published")
    return Change(article, "updated", "article.updated")


def plan_delete(existing: Article, *, now: datetime) -> Article | None:
    """The tombstone, or ``None`` when the article is already deleted."""
    if existing.deleted:
        return None
    return dataclasses.replace(
        existing, deleted_at=now, updated_at=now, version=existing.version + 1
    )
