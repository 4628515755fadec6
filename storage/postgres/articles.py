"""Articles on PostgreSQL: set-based writes under the write lock, group commit, reads."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from .. import _changes
from .._group import PutRequest
from .._sql import like_contains
from ..base import EventRenderer, ListCursor
from ..errors import (
    ArticleNotFound,
)
from ..jsoncodec import dumps_text
from ..records import (
    Article,
    ArticleDraft,
    EventType,
    PutResult,
    default_topic_title,
    new_event_id,
    utcnow,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]


from ._base import _AFTER_ALL, PostgresBase, Q

#: One statement of an article write: ("execute", sql, args) or ("executemany", sql, rows).
_Statement = tuple[str, str, Sequence[Any]]

#: ``records.format_time`` as a ``to_char`` pattern (of a UTC ``timestamp``).
_TO_CHAR_TIME = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'

#: The columns of ``save_article``, in order: an ``Article``'s fields, in theirs.
_ARTICLE_COLUMNS = tuple(field.name for field in dataclasses.fields(Article))


def _article_row(article: Article) -> tuple[Any, ...]:
    """In the column order of ``save_article`` (the jsonb codec takes the topics tuple)."""
    return tuple(getattr(article, column) for column in _ARTICLE_COLUMNS)


def _article_columns(articles: Iterable[Article]) -> list[list[Any]]:
    """The articles as one list per column of ``_ARTICLE_COLUMNS``, for ``unnest``
    (topics as JSON text)."""
    columns: list[list[Any]] = [[] for _ in _ARTICLE_COLUMNS]
    for article in articles:
        for column, name in zip(columns, _ARTICLE_COLUMNS, strict=True):
            column.append(getattr(article, name))
    topics = _ARTICLE_COLUMNS.index("topics")
    columns[topics] = [dumps_text(list(value)) for value in columns[topics]]
    return columns


class ArticlesMixin(PostgresBase):
    #: Renders each event's body as it is written (``set_event_renderer``); None: NULL.
    _event_renderer: EventRenderer | None = None

    def set_event_renderer(self, render: EventRenderer | None) -> None:
        self._event_renderer = render

    async def _write_puts(
        self,
        conn: _Conn,
        requests: Sequence[PutRequest],
        prepared: _changes.Prepared[_Statement] | None = None,
    ) -> list[PutResult | Exception]:
        """Many article writes in a handful of set-based statements (the caller holds
        the write lock): read what they touch, decide in Python, write the changes.
        ``prepared`` is the same decided before the lock (``_prepare``): used when
        what it was decided from is still what the database holds."""
        state = await self._state(conn.fetch, requests)
        if prepared is None or prepared.state != state:
            prepared = self._plan(requests, state)
        await self._run(conn, prepared.statements)
        return prepared.results()

    @staticmethod
    async def _run(conn: _Conn, statements: Sequence[_Statement]) -> None:
        for method, sql, args in statements:
            if method == "executemany":
                await conn.executemany(sql, args)
            else:
                await conn.execute(sql, *args)

    async def _prepare(self, requests: Sequence[PutRequest]) -> _changes.Prepared[_Statement]:
        """``requests`` decided from what the database holds now, before the write
        lock: the reads, the decisions and the statements' arguments (a tenth of a
        millisecond per article) then do not hold it up. Under the lock the reads are
        made again; the plan stands when they answer the same (``_write_puts``)."""
        return self._plan(requests, await self._state(self._fetch, requests))

    async def _state(
        self, fetch: Callable[..., Awaitable[list[asyncpg.Record]]], requests: Sequence[PutRequest]
    ) -> _changes.State:
        """The stored articles the requests name, and who holds the slugs they want."""
        ids = list(dict.fromkeys(r.draft.id for r in requests))
        wanting = _changes.slug_wants([r.draft for r in requests])
        # The articles themselves and who holds the slugs they want, in one query.
        rows = await fetch(Q["articles_and_slug_owners"], ids, sorted(wanting))
        existing = {row["id"]: self._article(row) for row in rows if row["wanted"]}
        owners = {row["slug"]: row["id"] for row in rows if row["slug"] in wanting}
        await self._crowded_slug_owners(fetch, wanting, owners)
        return existing, owners

    def _plan(
        self, requests: Sequence[PutRequest], state: _changes.State
    ) -> _changes.Prepared[_Statement]:
        existing, owners = state
        plans = _changes.plan_puts(
            [(r.draft, r.create_only, r.now) for r in requests], existing, owners
        )
        writes = [
            (p.event, p.article) for p in plans if isinstance(p, _changes.Change) and p.writes
        ]
        statements = (
            self._statements(writes, existing, max(r.now for r in requests)) if writes else []
        )
        return _changes.Prepared(state, plans, statements)

    @staticmethod
    async def _crowded_slug_owners(
        fetch: Callable[..., Awaitable[list[asyncpg.Record]]],
        wanting: Mapping[str, set[str]],
        owners: dict[str, str],
    ) -> None:
        """Where a wanted base slug is wanted twice or held by another article, add
        the holders of all its ``base-N`` forms to ``owners``: one query for all such
        bases (a batch re-importing 500 known titles made 500 round trips, 38 ms,
        while holding the write lock)."""
        bases = _changes.crowded_bases(wanting, owners)
        if not bases:
            return
        ranges = [_changes.slug_range(base) for base in bases]
        rows = await fetch(
            Q["slugs_in_ranges"], [low for low, _, _ in ranges], [high for _, _, high in ranges]
        )
        owners.update((row["slug"], row["id"]) for row in rows)

    def _statements(
        self,
        writes: Sequence[tuple[EventType | None, Article]],
        before: Mapping[str, Article],
        now: datetime,
    ) -> list[_Statement]:
        """What stores the articles (in order; an id may come twice, the last wins),
        one event each (none for a write of an article nobody has seen: a scheduled
        one), their topic rows and counts, and every touched topic's marker: one
        statement (``write_articles``), after one more for articles that had topic
        rows before."""
        statements: list[_Statement] = []
        final = {a.id: a for _, a in writes}
        indexed = [article_id for article_id in final if article_id in before]
        if indexed:
            statements.append(("execute", Q["write_articles.unindex_articles"], (indexed,)))
        in_one_go: Iterable[Article] = final.values()
        if len(final) < len(writes):
            # An id written twice: write every state in order (one upsert cannot
            # touch a row twice, and a slug may pass between articles in between).
            rows = [_article_row(a) for _, a in writes]
            statements.append(("executemany", Q["save_article"], rows))
            in_one_go = ()
        live = [a for a in final.values() if a.live]
        links = [(topic, a.id, a.published_at) for a in live for topic in a.topics]
        added = Counter(topic for topic, _, _ in links)
        # A scheduled article's writes touch no topic: it is in none of their feeds.
        touched = {t for event, a in writes if event is not None for t in a.topics}
        touched.update(t for i in indexed if not before[i].scheduled for t in before[i].topics)
        gaining = sorted(added)
        render = self._event_renderer
        # Written in one go, the n-th write is the n-th article: the statement builds
        # its snapshot from the row (see write_articles).
        snapshots = (
            [None] * len(writes) if in_one_go else [dumps_text(a.to_json()) for _, a in writes]
        )
        args = (
            *_article_columns(in_one_go),
            [event for event, _ in writes],
            [a.id for _, a in writes],
            [dumps_text(list(a.topics)) for _, a in writes],
            snapshots,
            [a.updated_at for _, a in writes],
            [topic for topic, _, _ in links],
            [article_id for _, article_id, _ in links],
            [published for _, _, published in links],
            gaining,
            [default_topic_title(t) for t in gaining],
            [added[t] for t in gaining],
            now,
            sorted(touched - added.keys()),
            _TO_CHAR_TIME,
            [new_event_id() for _ in writes],
            # The webhook bodies ($34), made before the write lock when the write was
            # prepared; NULL without a renderer, and for a write without an event.
            [render(event, a, a.updated_at) if event is not None else None for event, a in writes]
            if render is not None
            else [None] * len(writes),
        )
        statements.append(("execute", Q["write_articles"], args))
        return statements

    async def put_article(
        self, draft: ArticleDraft, *, create_only: bool = False, now: datetime | None = None
    ) -> PutResult:
        return await self._group.put(PutRequest(draft, create_only, now or utcnow()))

    async def _write_group(self, requests: Sequence[PutRequest]) -> list[PutResult | Exception]:
        async with self._write_transaction() as conn:
            return await self._write_puts(conn, requests)

    async def put_articles(
        self, drafts: Sequence[ArticleDraft], *, now: datetime | None = None
    ) -> list[PutResult]:
        stamp = now or utcnow()
        requests = [PutRequest(d, False, stamp) for d in drafts]
        prepared = await self._prepare(requests)
        async with self._write_transaction() as conn:
            outcomes = await self._write_puts(conn, requests, prepared)
        results = []
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
            results.append(outcome)
        return results

    async def get_article(self, article_id: str) -> Article:
        row = await self._fetch_one(Q["get_article"], article_id)
        if row is None:
            raise ArticleNotFound(article_id)
        return self._article(row)

    async def get_article_by_slug(self, slug: str) -> Article:
        row = await self._fetch_one(Q["get_article_by_slug"], slug)
        if row is None:
            raise ArticleNotFound(slug)
        return self._article(row)

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
            when, last_id = before or (_AFTER_ALL, "")
            rows = await self._fetch(Q["list_scheduled"], topic, when, last_id, limit)
            return [self._article(r) for r in rows]
        when, last_id = after or before or (_AFTER_ALL, "")
        if topic is None:
            query = Q["list_articles"] if after is None else Q["list_articles_after"]
            rows = await self._fetch(query, when, last_id, limit)
        else:
            query = (
                Q["list_articles_in_topic"] if after is None else Q["list_articles_in_topic_after"]
            )
            rows = await self._fetch(query, topic, when, last_id, limit)
        return [self._article(r) for r in rows]

    async def search_articles(
        self, query: str, *, topic: str | None = None, limit: int = 50
    ) -> list[Article]:
        rows = await self._fetch(Q["search_articles"], like_contains(query), topic, limit)
        return [self._article(r) for r in rows]

    async def delete_article(self, article_id: str, *, now: datetime | None = None) -> Article:
        stamp = now or utcnow()
        async with self._write_transaction() as conn:
            row = await conn.fetchrow(Q["get_article"], article_id)
            if row is None:
                raise ArticleNotFound(article_id)
            existing = self._article(row)
            tombstone = _changes.plan_delete(existing, now=stamp)
            if tombstone is None:
                return existing
            event: EventType | None = None if existing.scheduled else "article.deleted"
            writes: list[tuple[EventType | None, Article]] = [(event, tombstone)]
            await self._run(conn, self._statements(writes, {article_id: existing}, stamp))
            return tombstone

    async def list_deleted(
        self, *, topic: str | None = None, since: datetime, limit: int = 50
    ) -> list[Article]:
        if topic is None:
            rows = await self._fetch(Q["list_deleted"], since, limit)
        else:
            rows = await self._fetch(Q["list_deleted_in_topic"], topic, since, limit)
        return [self._article(r) for r in rows]

    async def next_scheduled(self) -> datetime | None:
        row = await self._fetch_one(Q["next_scheduled"])
        when: datetime | None = None if row is None else row[0]
        return None if when is None else when.astimezone(UTC)

    async def publish_due(
        self, *, now: datetime | None = None, limit: int = _changes.PUBLISH_BATCH
    ) -> list[Article]:
        stamp = now or utcnow()
        # Under the write lock: a second process waits for this commit, then finds
        # these articles no longer scheduled. Only this transaction writes their events.
        async with self._write_transaction() as conn:
            rows = await conn.fetch(Q["due_articles"], stamp, limit)
            published = [_changes.plan_publish(self._article(r), now=stamp) for r in rows]
            if published:
                writes: list[tuple[EventType | None, Article]] = [
                    ("article.published", a) for a in published
                ]
                await self._run(conn, self._statements(writes, {}, stamp))
        return published
