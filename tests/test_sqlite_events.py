"""SQLite stores each event's snapshot as the exact text partners are sent: the
JSON of ``Article.to_json()``, whichever way the writer built it (in SQL from the
article row for a batch of distinct articles, in Python when one write holds two
versions of an article)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage import open_storage
from storage.jsoncodec import dumps_text
from storage.records import ArticleDraft, format_time

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
ODD = '<p class="x">C:\\dir "quoted"\nline\ttab\r\x01\x1f\x7f é 肝 \U0001f600 \u2028 &amp; </p>'


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


def stored_events(db: Path) -> list[tuple[int, str, str, str, str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT seq, type, article_id, topics, data, created_at FROM events ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


def stored_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM events ORDER BY seq")]
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
    types = ["article.published"] * 3 + ["article.deleted"]
    types += ["article.published", "article.updated", "article.published"]
    assert stored_events(db) == [
        (
            seq,
            kind,
            a.id,
            dumps_text(list(a.topics)),
            dumps_text(a.to_json()),
            format_time(a.updated_at),
        )
        for seq, (kind, a) in enumerate(zip(types, expected, strict=True), start=1)
    ]
    assert [a.title for a in expected[-3:]] == ["First", "Second", "Other"]
    assert expected[-2].version == 2
    # Both ways of writing give each event its own msg_ + UUIDv7 id.
    ids = stored_ids(db)
    assert len(set(ids)) == len(ids) == 7
    assert all(re.fullmatch(r"msg_[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}", i) for i in ids)
