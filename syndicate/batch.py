"""Storing many articles at once: the batch API and ``syndicate import`` share this."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from storage import Storage
from storage.records import ArticleDraft

from .articles import to_draft
from .models import MAX_TOPICS, ArticleIn
from .problems import validation_errors

STATUSES = ("created", "updated", "unchanged", "rejected")
#: Articles validated and drafted between two turns of the event loop (~2-3 ms).
YIELD_EVERY = 32


def check_article(
    data: Any, field: str, *, max_topics: int = MAX_TOPICS
) -> ArticleIn | list[dict[str, str]]:
    """The validated article, or its errors with fields under ``field``."""
    if not isinstance(data, dict):
        return [{"field": field, "message": "expected a JSON object"}]
    try:
        return ArticleIn.model_validate(data, context={"max_topics": max_topics})
    except ValidationError as exc:
        return validation_errors(exc, field)


async def store_batch(
    storage: Storage,
    items: Sequence[Any],
    *,
    host: str,
    fields: Sequence[str],
    max_topics: int = MAX_TOPICS,
) -> list[dict[str, Any]]:
    """Validate every item, store the valid ones in one transaction.

    ``fields[i]`` names item ``i`` in error messages. Returns one
    ``{index, id, status, errors}`` per item, in order; an id seen earlier in
    the same batch is rejected so one batch never writes an article twice.
    """
    results: list[dict[str, Any]] = []
    drafts: list[ArticleDraft] = []
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
                {"index": index, "id": raw_id if isinstance(raw_id, str) else None,
                 "status": "rejected", "errors": checked}
            )  # fmt: skip
            continue
        draft = to_draft(checked, host=host)
        if draft.id in seen:
            message = f"duplicate of {fields[seen[draft.id]]} in this batch"
            results.append(
                {"index": index, "id": draft.id, "status": "rejected",
                 "errors": [{"field": f"{field}.id", "message": message}]}
            )  # fmt: skip
            continue
        seen[draft.id] = index
        results.append({"index": index, "id": draft.id, "status": "pending", "errors": []})
        drafts.append(draft)
        stored_at.append(index)
    if drafts:
        for index, put in zip(stored_at, await storage.put_articles(drafts), strict=True):
            results[index]["status"] = put.outcome
    return results


def tally(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(r["status"] for r in results)
    return {status: counts.get(status, 0) for status in STATUSES}
