"""What an article write does, decided once for every backend (no I/O here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from .errors import ArticleAlreadyPublished, ArticleExists, StorageError
from .records import (
    SUBSCRIPTION_MUTABLE,
    Article,
    ArticleDraft,
    EventType,
    PutOutcome,
    PutResult,
)

S = TypeVar("S")

MAX_SLUG_SUFFIX = 10_000
#: Scheduled articles published by one transaction of ``publish_due`` at the most.
PUBLISH_BATCH = 500


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


def slug_range(base: str) -> tuple[str, str, str]:
    """Query bounds for every slug that could clash with ``base``: itself, and
    ``base-…`` (the range ``[base-, base.)``, as ``.`` sorts right after ``-``)."""
    return base, base + "-", base + "."


def free_slug(base: str, taken: Container[str]) -> str:
    """The first of ``base``, ``base-2``, ``base-3``… not in ``taken``."""
    for candidate in slug_candidates(base):
        if candidate not in taken:
            return candidate
    raise StorageError(f"no free slug for {base!r}")


@dataclasses.dataclass(frozen=True)
class Change:
    """One article write: the article after it, its outcome and its event. A write
    with outcome ``unchanged`` stores nothing; one with no event (a scheduled
    article's) stores the row alone: nobody has been told of the article yet."""

    article: Article
    outcome: PutOutcome
    event: EventType | None

    @property
    def writes(self) -> bool:
        return self.outcome != "unchanged"


def plan_put(
    existing: Article | None,
    draft: ArticleDraft,
    *,
    slug: str | None,
    now: datetime,
    create_only: bool,
) -> Change:
    """The article after the write, and which event (if any) it produces.

    A ``published_at`` after ``now`` schedules an article that nobody has seen (new,
    scheduled, or a tombstone): it is stored without an event, and ``publish_due``
    announces it. A scheduled article given a time that has come is published by the
    write itself. A published article cannot be given a future time
    (``ArticleAlreadyPublished``)."""
    if existing is None:
        published_at = draft.published_at or now
        scheduled = published_at > now
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
            published_at=published_at,
            updated_at=now,
            created_at=now,
            version=1,
            scheduled=scheduled,
        )
        return Change(article, "created", None if scheduled else "article.published")
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
    unseen = existing.scheduled or existing.deleted
    if candidate.published_at > now and not unseen:
        raise ArticleAlreadyPublished(draft.id)
    if candidate.same_content(existing):
        # A scheduled article whose time has come stays for publish_due to announce.
        return Change(existing, "unchanged", None)
    scheduled = unseen and candidate.published_at > now
    # Versions count the changes readers could see: a scheduled article stays at 1 until
    # it is published (by this write or by publish_due), so its first published version
    # is not "updated" (``Article.modified_at``).
    version = existing.version if existing.scheduled else existing.version + 1
    article = dataclasses.replace(candidate, version=version, updated_at=now, scheduled=scheduled)
    if scheduled:
        return Change(article, "created" if existing.deleted else "updated", None)
    if existing.deleted:
        return Change(article, "created", "article.published")
    if existing.scheduled:
        return Change(article, "updated", "article.published")
    return Change(article, "updated", "article.updated")


def plan_delete(existing: Article, *, now: datetime) -> Article | None:
    """The tombstone, or ``None`` when the article is already deleted. A scheduled
    article's tombstone stays ``scheduled``: it was never announced, so its deletion
    is not either (no event, not in ``list_deleted``)."""
    if existing.deleted:
        return None
    return dataclasses.replace(
        existing, deleted_at=now, updated_at=now, version=existing.version + 1
    )


def plan_publish(due: Article, *, now: datetime) -> Article:
    """A scheduled article whose time has come, as ``publish_due`` announces it: no
    longer scheduled, ``updated_at`` the moment of publication (its event's time, which
    the log and webhook filters order by). Its ``version`` is still 1 (``plan_put``),
    so readers' first version is not "updated" (``Article.modified_at``)."""
    return dataclasses.replace(due, scheduled=False, updated_at=max(now, due.updated_at))


class _TakenFrom(Container[str]):
    """Slugs held by any article but ``article_id``."""

    def __init__(self, owners: Mapping[str, str], article_id: str) -> None:
        self._owners = owners
        self._id = article_id

    def __contains__(self, slug: object) -> bool:
        owner = self._owners.get(slug) if isinstance(slug, str) else None
        return owner is not None and owner != self._id


def slug_wants(drafts: Sequence[ArticleDraft]) -> dict[str, set[str]]:
    """Each slug base the drafts may want, and which article ids want it."""
    wanting: dict[str, set[str]] = {}
    for draft in drafts:
        wanting.setdefault(draft.slug, set()).add(draft.id)
    return wanting


def crowded_bases(wanting: Mapping[str, set[str]], owners: Mapping[str, str]) -> list[str]:
    """The bases whose ``base-N`` forms must be looked up too: wanted twice, or
    held by an article other than the one that wants it. (The others are free,
    or their own article's, and need nothing more.)"""
    return [
        base
        for base, ids in sorted(wanting.items())
        if len(ids) > 1 or owners.get(base, next(iter(ids))) not in ids
    ]


#: What article writes are decided from: the stored articles they name (by id) and
#: the article id holding each slug that could clash with theirs.
State = tuple[dict[str, Article], dict[str, str]]


@dataclasses.dataclass(frozen=True)
class Prepared(Generic[S]):
    """Article writes decided from ``state``, with the backend's statements (``S``)
    that carry them out. Decided before the write lock, it stands if the same reads
    made under the lock give the same ``state``: the decisions are a function of
    the requests and the state alone."""

    state: State
    plans: list[Change | StorageError]
    statements: list[S]

    def results(self) -> list[PutResult | Exception]:
        return [
            p if isinstance(p, Exception) else PutResult(p.article, p.outcome) for p in self.plans
        ]


def plan_puts(
    requests: Sequence[tuple[ArticleDraft, bool, datetime]],
    existing: Mapping[str, Article],
    slug_owners: Mapping[str, str],
) -> list[Change | StorageError]:
    """Many writes decided at once, in order, exactly as one after another would be:
    a later write sees an earlier one's article and slug. ``requests`` are
    ``(draft, create_only, now)``; ``existing`` the stored articles by id;
    ``slug_owners`` the article id holding each stored slug (at least every slug
    that could clash with a draft's). A write that cannot be done (it exists, no
    free slug) gets its error in its place; the others go ahead."""
    current = dict(existing)
    owners = dict(slug_owners)
    plans: list[Change | StorageError] = []
    for draft, create_only, stamp in requests:
        previous = current.get(draft.id)
        try:
            wanted = wanted_slug(previous, draft)
            slug = free_slug(wanted, _TakenFrom(owners, draft.id)) if wanted else None
            change = plan_put(previous, draft, slug=slug, now=stamp, create_only=create_only)
        except StorageError as exc:
            plans.append(exc)
            continue
        if change.writes:
            current[draft.id] = change.article
            if previous is not None and owners.get(previous.slug) == draft.id:
                del owners[previous.slug]
            owners[change.article.slug] = draft.id
        plans.append(change)
    return plans


SUBSCRIPTION_TIME_FIELDS = frozenset(
    {"previous_secret_expires_at", "lease_expires_at", "last_success_at", "failing_since"}
)


def subscription_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``update_subscription``'s changes, checked: ``ValueError`` for any key outside
    ``SUBSCRIPTION_MUTABLE`` or a value of the wrong shape. Topics and events come
    back as lists; backends encode the values for their columns."""
    unknown = set(changes) - SUBSCRIPTION_MUTABLE
    if unknown:
        raise ValueError(f"subscription fields that cannot be changed: {sorted(unknown)}")
    values: dict[str, Any] = {}
    for column in sorted(changes):
        value = changes[column]
        if column in ("topics", "events"):
            if isinstance(value, str | bytes):
                raise ValueError(f"{column} must be a sequence of strings, not one string")
            value = list(value)
        elif column in SUBSCRIPTION_TIME_FIELDS and value is not None:
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ValueError(f"{column} must be an aware datetime or None")
        values[column] = value
    return values
