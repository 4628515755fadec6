"""SQLite stores each event's snapshot as the exact text partners are sent: the
JSON of ``Article.to_json()``, whichever way the writer built it (in SQL from the
article row for a batch of distinct articles, in Python when one write holds two
versions of an article)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage import open_storage
from storage.jsoncodec import dumps_text
from storage.records import ArticleDraft

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
ODD = '<p class="x">C:\\dir "quoted"\nline\ttab\r é 肝 \U0001f600 \u2028 &amp; </p>'


def draft(article_id: str, **fields: object) -> ArticleDraft:
    values: dict[str, object] = {
        "id": article_id,
        "guid": f"tag:example.org,2026:article/{article_id}",
        "slug": article_id,
        "title": f"Title {article_id}",
        "summary": "Summary",
        "content": "<p>Body</p>",
        "content_type": "html",
        "topics": ("liver-health",),
        "published_at": T0,
    }
    values.update(fields)
    return ArticleDraft(**values)  # type: ignore[arg-type]


def stored_snapshots(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return [
            (row[0], row[1])
            for row in conn.execute("SELECT article_id, data FROM events ORDER BY seq")
        ]
    finally:
        conn.close()


async def test_snapshot_text_is_the_articles_json(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite"
    store = await open_storage(f"sqlite:///{db}")
    try:
        batch = await store.put_articles(
            [
                draft("plain"),
                draft("odd", content=ODD, title='T "q" \\', summary="é\n", author="Ann"),
                draft(
                    "early",
                    published_at=datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
                    topics=("liver-health", "diabetes"),
                    url="https://example.org/early",
                    language="en",
                ),
            ],
            now=T0 + timedelta(microseconds=7),
        )
        deleted = await store.delete_article("plain", now=T0 + timedelta(hours=1))
        # Two versions of one article in one group commit: each event keeps its own.
        twice = await asyncio.gather(
            store.put_article(draft("twice", title="First")),
            store.put_article(draft("twice", title="Second")),
            store.put_article(draft("other", title="Other")),
        )
    finally:
        await store.close()
    expected = [r.article for r in batch] + [deleted] + [r.article for r in twice]
    assert stored_snapshots(db) == [(a.id, dumps_text(a.to_json())) for a in expected]
    assert [a.title for a in expected[-3:]] == ["First", "Second", "Other"]
    assert expected[-2].version == 2
