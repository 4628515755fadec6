"""Storing many articles at once: the batch API and ``syndicate import`` share this."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any, get_args

from pydantic import ValidationError

from storage import ArticleNotFound, Storage
from storage.records import ArticleDraft, utcnow
from syndicate.content.articles import article_base, to_draft
from syndicate.content.models import ArticleIn
from syndicate.content.responses import BatchStatus
from syndicate.content.text import ContentTooComplex, render_content
from syndicate.content.validation import validation_errors
from syndicate.core.settings import MAX_TOPICS_PER_ARTICLE

STATUSES: tuple[BatchStatus, ...] = get_args(BatchStatus)
#: Articles validated (or drafted) between two turns of the event loop (~1 ms).
YIELD_EVERY = 32


def check_article(
    data: Any, field: str, *, max_topics: int = MAX_TOPICS_PER_ARTICLE
) -> ArticleIn | list[dict[str, str]]:
    """The validated article, or its errors with fields under ``field``."""
    if not isinstance(data, dict):
        return [{"field": field, "message": "expected a JSON object"}]
    try:
        return ArticleIn.model_validate(data, context={"max_topics": max_topics})
    except ValidationError as exc:
        return validation_errors(exc, field)


def _render_all(items: Sequence[ArticleIn], base_url: str | None) -> list[str | ContentTooComplex]:
    """Every item's content rendered, or why it was refused (run on a worker thread)."""
    rendered: list[str | ContentTooComplex] = []
    for item in items:
        try:
            base = article_base(item, base_url)
            rendered.append(render_content(item.content, item.content_type, base))
        except ContentTooComplex as exc:
            rendered.append(exc)
    return rendered


async def store_batch(
    storage: Storage,
    items: Sequence[Any],
    *,
    host: str,
    fields: Sequence[str],
    max_topics: int = MAX_TOPICS_PER_ARTICLE,
    base_url: str | None = None,
) -> list[dict[str, Any]]:
    """Validate every item, store the valid ones in one transaction; relative links
    in their content resolved as ``articles.to_draft`` does.

    ``fields[i]`` names item ``i`` in error messages. Returns one
    ``{index, id, status, errors}`` per item, in order; an id seen earlier in
    the same batch is rejected so one batch never writes an article twice.
    """
    results: list[dict[str, Any]] = []
    valid: list[ArticleIn] = []
    stored_at: list[int] = []
    seen: dict[str, int] = {}
    for index, (raw, field) in enumerate(zip(items, fields, strict=True)):
        if index and index % YIELD_EVERY == 0:
            # Let the loop run between slices: another request's write may be
            # waiting for a database reply while holding the write lock.
            await asyncio.sleep(0)
        checked = check_article(raw, field, max_topics=max_topics)
        if isinstance(checked, list):
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            results.append(
                {
                    "index": index,
                    "id": raw_id if isinstance(raw_id, str) else None,
                    "status": "rejected",
                    "errors": checked,
                }
            )
            continue
        if checked.id is not None and checked.id in seen:
            message = f"duplicate of {fields[seen[checked.id]]} in this batch"
            results.append(
                {
                    "index": index,
                    "id": checked.id,
                    "status": "rejected",
                    "errors": [{"field": f"{field}.id", "message": message}],
                }
            )
            continue
        if checked.id is not None:
            seen[checked.id] = index
        results.append({"index": index, "id": checked.id, "status": "pending", "errors": []})
        valid.append(checked)
        stored_at.append(index)
    if not valid:
        return results
    # Always on a worker thread, however small the batch: rendering is bounded,
    # but still CPU (nh3 sanitizes without the GIL; markdown-it is pure Python).
    contents = await asyncio.to_thread(_render_all, valid, base_url)
    drafts: list[ArticleDraft] = []
    drafted_at: list[int] = []
    for n, (item, content, index) in enumerate(zip(valid, contents, stored_at, strict=True)):
        if n and n % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if isinstance(content, ContentTooComplex):
            error = {"field": f"{fields[index]}.content", "message": str(content)}
            results[index].update(status="rejected", errors=[error])
            continue
        draft = to_draft(item, host=host, content=content)
        results[index]["id"] = draft.id  # made here for an article sent without one
        drafts.append(draft)
        drafted_at.append(index)
    drafts, drafted_at = await _without_reschedules(storage, drafts, drafted_at, fields, results)
    if not drafts:
        return results
    for index, put in zip(drafted_at, await storage.put_articles(drafts), strict=True):
        results[index]["status"] = put.outcome
    return results


def tally(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(r["status"] for r in results)
    return {status: counts.get(status, 0) for status in STATUSES}


async def _without_reschedules(
    storage: Storage,
    drafts: list[ArticleDraft],
    drafted_at: list[int],
    fields: Sequence[str],
    results: list[dict[str, Any]],
) -> tuple[list[ArticleDraft], list[int]]:
    """The drafts less those giving an already published article a future
    ``published_at``: each is rejected in its place, naming ``published_at`` (the
    store refuses it, which would fail the whole batch's one transaction). Only
    future-dated drafts are looked up, so a usual batch costs no read."""
    now = utcnow()
    keep: list[ArticleDraft] = []
    kept_at: list[int] = []
    for draft, index in zip(drafts, drafted_at, strict=True):
        if draft.published_at is not None and draft.published_at > now:
            try:
                stored = await storage.get_article(draft.id)
            except ArticleNotFound:
                stored = None
            if stored is not None and not stored.scheduled and not stored.deleted:
                message = "already published: it cannot be rescheduled"
                error = {"field": f"{fields[index]}.published_at", "message": message}
                results[index].update(status="rejected", errors=[error])
                continue
        keep.append(draft)
        kept_at.append(index)
    return keep, kept_at
