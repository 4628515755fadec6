"""Articles on SQLite: writes in one hop to the writer thread, group commit, reads."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .. import _changes
from .._group import PutRequest
from .._sql import like_contains
from ..base import EventRenderer, ListCursor
from ..errors import (
    ArticleNotFound,
    StorageError,
)
from ..jsoncodec import dumps_text
from ..records import (
    Article,
    ArticleDraft,
    EventType,
    PutResult,
    default_topic_title,
    format_time,
    new_event_id,
    utcnow,
)
from ._base import Q, SQLiteBase, on_thread, wrap_exceptions
from ._bulk import fetch_all, insert_rows
from ._rows import (
    article_params,
    text_time,
    to_article,
)

#: Sorts after every stored time: the "no cursor" upper bound.
_AFTER_ALL = "~"


@dataclasses.dataclass(frozen=True)
class _Rows:
    """An article write's rows, made before the write lock (``SQLiteStorage._rows``)."""

    articles: list[tuple[Any, ...]]
    #: Each event's row after its seq, which is known only under the lock; empty
    #: when SQLite builds the snapshots (``from_articles``).
    events: list[tuple[Any, ...]]
    #: JSON array of [event id, type, article id], one per event, when every event is
    #: of a distinct article: SQLite then makes each snapshot from the row just written.
    from_articles: str | None
    event_count: int
    #: JSON array of the ids whose topic rows are replaced, or None.
    indexed: str | None
    #: (topic, topic rows it gains), by topic.
    counts: list[tuple[str, int]]
    links: list[tuple[str, str, str]]
    #: JSON array of the topics only marked changed, or None.
    touched: str | None
    stamp: str


class ArticlesMixin(SQLiteBase):
    #: Renders each event's body as it is written (``set_event_renderer``); None: NULL.
    _event_renderer: EventRenderer | None = None

    def set_event_renderer(self, render: EventRenderer | None) -> None:
        self._event_renderer = render

    def _write_puts(
        self,
        conn: sqlite3.Connection,
        requests: Sequence[PutRequest],
        prepared: _changes.Prepared[_Rows] | None = None,
    ) -> list[PutResult | Exception]:
        """Many article writes in a handful of statements (on the writer, in its
        transaction): read what they touch, decide in Python, write the changes.
        ``prepared`` is the same decided before the write lock (``_prepare``): used
        when what it was decided from is still what the database holds."""
        state = self._state(conn, requests)
        if prepared is None or prepared.state != state:
            prepared = self._plan(requests, state)
        for rows in prepared.statements:
            self._write_rows(conn, rows)
        return prepared.results()

    async def _prepare(self, requests: Sequence[PutRequest]) -> _changes.Prepared[_Rows]:
        """``requests`` decided from what the database holds now, on the reader and
        this thread, before the write lock: the decisions and the rows (~16 µs per
        article) then do not hold up the writer. Under the lock the reads are made
        again; the plan stands when they answer the same (``_write_puts``)."""
        with wrap_exceptions():
            state: _changes.State = await on_thread(self._reader, self._state, requests)
        return self._plan(requests, state)

    @classmethod
    def _state(cls, conn: sqlite3.Connection, requests: Sequence[PutRequest]) -> _changes.State:
        """The stored articles the requests name, and who holds the slugs they want."""
        ids = json.dumps(list(dict.fromkeys(r.draft.id for r in requests)))
        existing = {
            row["id"]: to_article(row)
            for row in conn.execute(Q["articles_and_slug_owners.articles"], (ids,))
        }
        return existing, cls._slug_owners(conn, [r.draft for r in requests])

    def _plan(
        self, requests: Sequence[PutRequest], state: _changes.State
    ) -> _changes.Prepared[_Rows]:
        existing, owners = state
        plans = _changes.plan_puts(
            [(r.draft, r.create_only, r.now) for r in requests], existing, owners
        )
        writes = [
            (p.event, p.article) for p in plans if isinstance(p, _changes.Change) and p.writes
        ]
        rows = [self._rows(writes, existing, max(r.now for r in requests))] if writes else []
        return _changes.Prepared(state, plans, rows)

    @staticmethod
    def _slug_owners(conn: sqlite3.Connection, drafts: Sequence[ArticleDraft]) -> dict[str, str]:
        wanting = _changes.slug_wants(drafts)
        rows = conn.execute(
            Q["articles_and_slug_owners.slug_owners"], (json.dumps(sorted(wanting)),)
        )
        owners = {row["slug"]: row["id"] for row in rows}
        crowded = _changes.crowded_bases(wanting, owners)
        if crowded:
            # One step for every base's range (see _bulk): a batch re-importing
            # 500 titles made 500 statements and fetched their rows one by one.
            found = fetch_all(conn, Q["slugs_in_ranges"], (json.dumps(crowded),))
            owners.update((row["slug"], row["id"]) for row in found)
        return owners

    def _rows(
        self,
        writes: Sequence[tuple[EventType | None, Article]],
        before: Mapping[str, Article],
        now: datetime,
    ) -> _Rows:
        """The rows that store the articles (in order; an id may come twice, the last
        wins), one event each (none for a write of an article nobody has seen: a
        scheduled one), their topic rows and counts, and every touched topic's
        marker: all but what needs the event seqs, known under the lock."""
        final = {a.id: a for _, a in writes}
        indexed = [article_id for article_id in final if article_id in before]
        live = [a for a in final.values() if a.live]
        counts = Counter(topic for a in live for topic in a.topics)
        announced = [(event, a) for event, a in writes if event is not None]
        touched = sorted({topic for _, a in announced for topic in a.topics} - counts.keys())
        # An id written twice (group commit) has an event for the version that the
        # row no longer holds: those snapshots are made here.
        # SQLite before 3.42 cuts json_extract's text at a NUL: such an id (the API
        # never lets one in) would not find its row.
        # With a renderer, every event row is made here too: the body is bound as it
        # is, and the snapshot made in Python costs about what SQLite's did, while
        # passing bodies through the JSON array (escaped, then extracted) tripled the
        # statement's cost (decisions: "Why are event rows made in Python when bodies
        # are stored?").
        render = self._event_renderer
        in_sql = (
            render is None and len(final) == len(writes) and not any("\x00" in i for i in final)
        )
        # JSON text (valid UTF-8); made before the write lock when the write was
        # prepared.
        bodies = (
            [render(event, a, a.updated_at).decode() for event, a in announced]
            if render is not None
            else [None] * len(announced)
        )
        return _Rows(
            articles=[article_params(a) for _, a in writes],
            events=[]
            if in_sql
            else [
                (
                    new_event_id(),
                    event,
                    a.id,
                    dumps_text(a.topics),
                    dumps_text(a.to_json()),
                    format_time(a.updated_at),
                    body,
                )
                for (event, a), body in zip(announced, bodies, strict=True)
            ],
            from_articles=dumps_text([(new_event_id(), event, a.id) for event, a in announced])
            if in_sql
            else None,
            event_count=len(announced),
            indexed=json.dumps(indexed) if indexed else None,
            counts=sorted(counts.items()),
            links=[(topic, a.id, format_time(a.published_at)) for a in live for topic in a.topics],
            touched=json.dumps(touched) if touched else None,
            stamp=format_time(now),
        )

    @staticmethod
    def _write_rows(conn: sqlite3.Connection, rows: _Rows) -> None:
        """Write ``rows`` (on the writer, in its transaction)."""
        insert_rows(conn, Q["save_article"], rows.articles)
        first = int(conn.execute(Q["write_articles.last_event_seq"]).fetchone()[0]) + 1
        if rows.from_articles is not None:
            made = conn.execute(
                Q["write_articles.insert_events_from_articles"], (first, rows.from_articles)
            )
            if made.rowcount != rows.event_count:  # never seen; the seqs would be off
                raise StorageError(
                    f"SQLite: {made.rowcount} of {rows.event_count} events found their article"
                )
        else:
            insert_rows(
                conn,
                Q["write_articles.insert_events"],
                [(seq, *event) for seq, event in enumerate(rows.events, start=first)],
            )
        last, stamp = first + rows.event_count - 1, rows.stamp
        if rows.indexed is not None:
            conn.execute(Q["write_articles.unindex_articles"], (last, stamp, rows.indexed))
            conn.execute(Q["write_articles.delete_article_topics"], (rows.indexed,))
        insert_rows(
            conn,
            Q["write_articles.add_topic_counts"],
            [
                (topic, default_topic_title(topic), stamp, stamp, n, last, stamp)
                for topic, n in rows.counts
            ],
        )
        insert_rows(conn, Q["write_articles.insert_article_topics"], rows.links)
        if rows.touched is not None:
            conn.execute(Q["write_articles.mark_topics_changed"], (last, stamp, rows.touched))

    def _apply(
        self,
        conn: sqlite3.Connection,
        writes: Sequence[tuple[EventType | None, Article]],
        before: Mapping[str, Article],
        now: datetime,
    ) -> None:
        self._write_rows(conn, self._rows(writes, before, now))

    async def put_article(
        self, draft: ArticleDraft, *, create_only: bool = False, now: datetime | None = None
    ) -> PutResult:
        # Group commit (storage/_group.py): single writes that arrive while the
        # writer is busy are written together in its next transaction.
        return await self._group.put(PutRequest(draft, create_only, now or utcnow()))

    async def _write_group(self, requests: Sequence[PutRequest]) -> list[PutResult | Exception]:
        results = await self._in_writer(lambda conn: self._write_puts(conn, requests))
        self._events_committed()
        return results

    async def put_articles(
        self, drafts: Sequence[ArticleDraft], *, now: datetime | None = None
    ) -> list[PutResult]:
        stamp = now or utcnow()
        requests = [PutRequest(d, False, stamp) for d in drafts]
        prepared = await self._prepare(requests)
        outcomes = await self._in_writer(lambda conn: self._write_puts(conn, requests, prepared))
        self._events_committed()
        results = []
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
            results.append(outcome)
        return results

    async def get_article(self, article_id: str) -> Article:
        async with self._read(Q["get_article"], (article_id,)) as rows:
            if not rows:
                raise ArticleNotFound(article_id)
            return to_article(rows[0])

    async def get_article_by_slug(self, slug: str) -> Article:
        async with self._read(Q["get_article_by_slug"], (slug,)) as rows:
            if not rows:
                raise ArticleNotFound(slug)
            return to_article(rows[0])

    async def list_articles(
        self,
        *,
        topic: str | None = None,
        limit: int = 50,
        before: ListCursor | None = None,
        after: ListCursor | None = None,
        scheduled: bool = False,
    ) -> list[Article]:
        if scheduled:
            when, last_id = (format_time(before[0]), before[1]) if before else (_AFTER_ALL, "")
            async with self._read(Q["list_scheduled"], (topic, when, last_id, limit)) as rows:
                return [to_article(r) for r in rows]
        if after is not None:
            when, last_id = format_time(after[0]), after[1]
        else:
            when, last_id = (format_time(before[0]), before[1]) if before else (_AFTER_ALL, "")
        params: tuple[str | int, ...] = (when, last_id, limit)
        if topic is None:
            query = Q["list_articles"] if after is None else Q["list_articles_after"]
        else:
            query = (
                Q["list_articles_in_topic"] if after is None else Q["list_articles_in_topic_after"]
            )
            params = (topic, *params)
        async with self._read(query, params) as rows:
            return [to_article(r) for r in rows]

    async def search_articles(
        self, query: str, *, topic: str | None = None, limit: int = 50
    ) -> list[Article]:
        params = {"pattern": like_contains(query), "topic": topic, "limit": limit}
        async with self._read(Q["search_articles"], params) as rows:
            return [to_article(r) for r in rows]

    async def delete_article(self, article_id: str, *, now: datetime | None = None) -> Article:
        stamp = now or utcnow()

        def delete(conn: sqlite3.Connection) -> Article:
            row = conn.execute(Q["get_article"], (article_id,)).fetchone()
            if row is None:
                raise ArticleNotFound(article_id)
            existing = to_article(row)
            tombstone = _changes.plan_delete(existing, now=stamp)
            if tombstone is None:
                return existing
            event: EventType | None = None if existing.scheduled else "article.deleted"
            self._apply(conn, [(event, tombstone)], {article_id: existing}, stamp)
            return tombstone

        tombstone = await self._in_writer(delete)
        self._events_committed()
        return tombstone

    async def list_deleted(
        self, *, topic: str | None = None, since: datetime, limit: int = 50
    ) -> list[Article]:
        params: tuple[str | int, ...] = (format_time(since), limit)
        query = Q["list_deleted"]
        if topic is not None:
            query, params = Q["list_deleted_in_topic"], (topic, *params)
        async with self._read(query, params) as rows:
            return [to_article(r) for r in rows]

    async def next_scheduled(self) -> datetime | None:
        async with self._read(Q["next_scheduled"]) as rows:
            return text_time(rows[0][0]) if rows else None

    async def publish_due(
        self, *, now: datetime | None = None, limit: int = _changes.PUBLISH_BATCH
    ) -> list[Article]:
        stamp = now or utcnow()

        def publish(conn: sqlite3.Connection) -> list[Article]:
            # On the one writer: a second process's writer waits for this commit, then
            # finds these articles no longer scheduled.
            rows = conn.execute(Q["due_articles"], (format_time(stamp), limit)).fetchall()
            published = [_changes.plan_publish(to_article(r), now=stamp) for r in rows]
            if published:
                self._apply(conn, [("article.published", a) for a in published], {}, stamp)
            return published

        published = await self._in_writer(publish)
        if published:
            self._events_committed()
        return published
